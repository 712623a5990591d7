//! Scopes and grants: where a caller may act.

use serde::{Deserialize, Serialize};

use crate::namespaces::{covers, validate_name};

/// The longest agent, session or channel value.
pub const MAX_SCOPE_VALUE: usize = 256;
/// The most grants one token may carry.
pub const MAX_GRANTS: usize = 64;

/// Grants are the ones trusted OIDC issuers map to (`authentication.trust.oidc[].grants`): one
/// type, so a grant from an exchange and one from a token claim are the same thing.
pub use crate::authn::config::{Grant, GrantKind};

/// Where something happens: a namespace and, below it, an agent, a session and a channel.
/// As a restriction, `None` means "not restricted on that field".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "ns")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

impl Grant {
    /// An unrestricted grant of `kind`.
    pub fn all(kind: GrantKind) -> Self {
        Self {
            kind,
            namespace: None,
            agent: None,
            session: None,
            channel: None,
        }
    }

    /// The grant's restrictions as a scope.
    pub fn scope(&self) -> Scope {
        Scope {
            namespace: self.namespace.clone(),
            agent: self.agent.clone(),
            session: self.session.clone(),
            channel: self.channel.clone(),
        }
    }
}

impl Scope {
    /// Whether `target` lies within this restriction. A field the target leaves out never
    /// satisfies a restriction on it: omitting the narrower field does not escape it.
    pub fn contains(&self, target: &Scope) -> bool {
        fn field(restriction: &Option<String>, value: &Option<String>, hierarchical: bool) -> bool {
            match (restriction, value) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(r), Some(v)) if hierarchical => covers(r, v),
                (Some(r), Some(v)) => r == v,
            }
        }
        field(&self.namespace, &target.namespace, true)
            && field(&self.agent, &target.agent, false)
            && field(&self.session, &target.session, false)
            && field(&self.channel, &target.channel, false)
    }

    /// Checks every present field: names valid, values non-empty and short.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(ns) = &self.namespace {
            validate_name(ns).map_err(|e| e.to_string())?;
        }
        for (name, value) in [
            ("agent", &self.agent),
            ("session", &self.session),
            ("channel", &self.channel),
        ] {
            if let Some(v) = value {
                if v.is_empty() {
                    return Err(format!("{name} is empty"));
                }
                if v.len() > MAX_SCOPE_VALUE || v.chars().any(char::is_control) {
                    return Err(format!(
                        "{name} is longer than {MAX_SCOPE_VALUE} bytes or has control characters"
                    ));
                }
            }
        }
        Ok(())
    }
}
