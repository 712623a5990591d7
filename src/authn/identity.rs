//! The authenticated caller, as Rego sees it in `input.identity`.

use serde::Serialize;
use serde_json::{Map, Value as Json};

use super::config::{Grant, Method};

/// Who the caller is, after a successful authentication.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Identity {
    pub method: Method,
    pub subject: String,
    pub issuer: Option<String>,
    /// The verified token's claims (JWT), else `{}`.
    pub claims: Map<String, Json>,
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
    pub grants: Vec<Grant>,
    pub api_key_id: Option<String>,
    #[serde(skip)]
    pub email: Option<String>,
    /// The credential's own expiry (seconds since the epoch), which caps the internal token.
    #[serde(skip)]
    pub expires_at: Option<i64>,
    /// SHA-256 (hex) of the presented credential, for audit events.
    #[serde(skip)]
    pub thumbprint: String,
    /// `input.identity`, built once (identities of cached tokens are shared between Checks).
    #[serde(skip)]
    value: std::sync::OnceLock<regorus::Value>,
}

impl Identity {
    pub fn new(method: Method, subject: String, thumbprint: String) -> Self {
        Self {
            method,
            subject,
            issuer: None,
            claims: Map::new(),
            roles: Vec::new(),
            scopes: Vec::new(),
            grants: Vec::new(),
            api_key_id: None,
            email: None,
            expires_at: None,
            thumbprint,
            value: std::sync::OnceLock::new(),
        }
    }

    /// `input.identity` (built on first use; set every field before that).
    pub fn to_value(&self) -> regorus::Value {
        self.value
            .get_or_init(|| match serde_json::to_value(self) {
                Ok(json) => regorus::Value::from(json),
                Err(_) => regorus::Value::Null,
            })
            .clone()
    }

    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// Adds `identity` (an [`Identity`], or null for an anonymous caller) to the input document.
pub fn attach(input: &mut regorus::Value, identity: Option<&Identity>) {
    let value = identity.map_or(regorus::Value::Null, Identity::to_value);
    if let Ok(obj) = input.as_object_mut() {
        obj.insert(regorus::Value::from("identity"), value);
    }
}
