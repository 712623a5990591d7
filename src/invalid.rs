//! A configuration value that the section owning it refuses: where (the key, dotted) and why.
//! Sections validate themselves and name keys from their own root; the config loader, which
//! knows the file and where each section sits, turns this into a `ConfigError` naming both.

/// A refused configuration value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct Invalid {
    /// The dotted key, from the validating section's root (`policies[0].jwt.algorithms`).
    pub key: String,
    pub message: String,
}

impl Invalid {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }

    /// The same error with its key placed below `prefix` (`jwt` + `algorithms` →
    /// `jwt.algorithms`).
    pub fn under(mut self, prefix: &str) -> Self {
        self.key = if self.key.is_empty() {
            prefix.to_string()
        } else if self.key.starts_with('[') {
            format!("{prefix}{}", self.key)
        } else {
            format!("{prefix}.{}", self.key)
        };
        self
    }
}
