//! OPA's `services` config (remote HTTP endpoints used by bundles and decision-log uploads) and
//! the one HTTP client builder every outbound call uses.
//!
//! ```yaml
//! services:
//!   acmecorp:                        # or a list of {name: acmecorp, url: ...}
//!     url: https://example.com/api/v1
//!     response_header_timeout_seconds: 10
//!     headers: {x-tenant: a}
//!     credentials:
//!       bearer: {token: "...", scheme: Bearer}   # or token_path: /var/run/secrets/token
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Once;
use std::time::Duration;

use serde::Deserialize;

/// One remote service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Only in the list form.
    #[serde(default)]
    pub name: Option<String>,
    pub url: String,
    #[serde(default)]
    pub response_header_timeout_seconds: Option<u64>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub credentials: Option<Credentials>,
    /// Accepted for compatibility: when true, TLS certificates are not checked.
    #[serde(default)]
    pub allow_insecure_tls: bool,
}

/// `credentials:` — only bearer tokens are supported; other kinds are refused by the parser.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub bearer: Option<Bearer>,
}

/// `credentials.bearer`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bearer {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub token_path: Option<PathBuf>,
    #[serde(default = "default_scheme")]
    pub scheme: String,
}

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bearer")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_path", &self.token_path)
            .field("scheme", &self.scheme)
            .finish()
    }
}

fn default_scheme() -> String {
    "Bearer".into()
}

impl Bearer {
    /// The `authorization` header value; `token_path` is read on every call so that rotated
    /// tokens are picked up.
    pub fn header_value(&self) -> std::io::Result<String> {
        let token = match (&self.token, &self.token_path) {
            (Some(t), _) => t.clone(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!("credentials.bearer.token_path {}: {e}", path.display()),
                    )
                })?
                .trim()
                .to_string(),
            (None, None) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "bearer credentials need token or token_path",
                ));
            }
        };
        Ok(format!("{} {}", self.scheme, token))
    }
}

/// `services:` in either of OPA's forms, keyed by name.
#[derive(Debug, Clone, Default)]
pub struct Services(pub BTreeMap<String, Service>);

impl<'de> Deserialize<'de> for Services {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Map(BTreeMap<String, Service>),
            List(Vec<Service>),
        }
        match Form::deserialize(d)? {
            Form::Map(m) => Ok(Services(m)),
            Form::List(list) => {
                let mut map = BTreeMap::new();
                for s in list {
                    let name = s.name.clone().ok_or_else(|| {
                        serde::de::Error::custom("a service in a list needs a name")
                    })?;
                    if map.insert(name.clone(), s).is_some() {
                        return Err(serde::de::Error::custom(format!(
                            "service {name:?} is defined twice"
                        )));
                    }
                }
                Ok(Services(map))
            }
        }
    }
}

impl Services {
    /// The named service.
    pub fn get(&self, name: &str) -> Option<&Service> {
        self.0.get(name)
    }
}

static CRYPTO: Once = Once::new();

/// An HTTP client for outbound calls (rustls with the ring provider, the platform's trusted
/// roots), with a total timeout per request.
pub fn http_client(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    CRYPTO.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .build()
}

/// An HTTP client for calls that decide who a caller is (token introspection, external
/// validators): as [`http_client`], but following no redirect, so an answer always comes from
/// the configured host.
pub fn callout_client(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    CRYPTO.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_parse() {
        let m: Services = yaml_serde::from_str(
            "acme:\n  url: https://x\n  credentials:\n    bearer:\n      token: t\n",
        )
        .unwrap();
        let acme = m.get("acme").unwrap();
        assert_eq!(
            acme.credentials
                .as_ref()
                .unwrap()
                .bearer
                .as_ref()
                .unwrap()
                .header_value()
                .unwrap(),
            "Bearer t"
        );
        let l: Services = yaml_serde::from_str("- name: a\n  url: http://a\n").unwrap();
        assert_eq!(l.get("a").unwrap().url, "http://a");
        // A missing token file is named, with its key.
        let missing = Bearer {
            token: None,
            token_path: Some("/nonexistent/token".into()),
            scheme: "Bearer".into(),
        };
        let e = missing.header_value().unwrap_err().to_string();
        assert!(
            e.contains("credentials.bearer.token_path") && e.contains("/nonexistent/token"),
            "{e}"
        );
        assert!(yaml_serde::from_str::<Services>("- url: http://a\n").is_err());
        assert!(yaml_serde::from_str::<Services>("a:\n  url: x\n  nope: 1\n").is_err());
        let dbg = format!("{:?}", acme);
        assert!(!dbg.contains("\"t\""), "{dbg}");
    }

    #[tokio::test]
    async fn client_builds() {
        assert!(http_client(Duration::from_secs(1)).is_ok());
    }
}
