//! The `.manifest` file and bundle roots.
//!
//! Roots are slash-separated data paths (`envoy/authz`, `acl`); the empty root `""` (the
//! default) owns all of `data`. Two roots overlap when one is a path prefix of the other, segment
//! by segment (`a/b` and `a/bc` do not overlap).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::BundleError;

/// A bundle's `.manifest`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct Manifest {
    #[serde(default)]
    pub revision: String,
    /// `None` means OPA's default, `[""]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roots: Option<Vec<String>>,
    /// 0 for Rego v0, 1 for Rego v1; `None` follows `--v0-compatible`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rego_version: Option<i64>,
    /// Per-file Rego versions, keyed by glob over bundle paths.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub file_rego_versions: BTreeMap<String, i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// Wasm modules cannot be evaluated by Portcullis; a bundle that has any is refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wasm: Vec<serde_json::Value>,
}

impl Manifest {
    /// Parses a `.manifest`.
    pub fn parse(bytes: &[u8]) -> Result<Self, BundleError> {
        let manifest: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| BundleError::Manifest(format!(".manifest: {e}")))?;
        if !manifest.wasm.is_empty() {
            return Err(BundleError::Manifest(
                ".manifest: wasm modules are not supported by Portcullis".into(),
            ));
        }
        for version in manifest
            .rego_version
            .iter()
            .chain(manifest.file_rego_versions.values())
        {
            if !matches!(version, 0 | 1) {
                return Err(BundleError::Manifest(format!(
                    ".manifest: rego_version must be 0 or 1, got {version}"
                )));
            }
        }
        let roots = manifest.roots();
        for (i, a) in roots.iter().enumerate() {
            for b in &roots[i + 1..] {
                if roots_overlap(a, b) {
                    return Err(BundleError::Manifest(format!(
                        ".manifest: roots {a:?} and {b:?} overlap"
                    )));
                }
            }
        }
        Ok(manifest)
    }

    /// The roots, normalised (no leading or trailing `/`); `[""]` when none are declared.
    pub fn roots(&self) -> Vec<String> {
        match &self.roots {
            None => vec![String::new()],
            Some(roots) => roots
                .iter()
                .map(|r| r.trim_matches('/').to_string())
                .collect(),
        }
    }
}

fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

/// Whether `path` lies within `root` (segment-wise prefix).
pub fn root_contains(root: &str, path: &str) -> bool {
    let mut path = segments(path);
    segments(root).all(|r| path.next() == Some(r))
}

/// Whether two roots overlap.
pub fn roots_overlap(a: &str, b: &str) -> bool {
    root_contains(a, b) || root_contains(b, a)
}

/// Whether any of `roots` contains `path`.
pub fn roots_contain(roots: &[String], path: &str) -> bool {
    roots.iter().any(|r| root_contains(r, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_is_segment_wise() {
        assert!(roots_overlap("a/b", "a"));
        assert!(roots_overlap("", "x"));
        assert!(!roots_overlap("a/b", "a/bc"));
        assert!(root_contains("a", "a/b/c"));
        assert!(!root_contains("a/b", "a"));
    }

    #[test]
    fn manifest_checks() {
        let m =
            Manifest::parse(br#"{"revision":"r1","roots":["/a/","b"],"rego_version":1}"#).unwrap();
        assert_eq!(m.roots(), vec!["a", "b"]);
        assert_eq!(Manifest::parse(b"{}").unwrap().roots(), vec![""]);
        assert!(Manifest::parse(br#"{"roots":["a","a/b"]}"#).is_err());
        assert!(Manifest::parse(br#"{"rego_version":2}"#).is_err());
        assert!(Manifest::parse(br#"{"revision":1}"#).is_err());
    }
}
