//! OPA bundles: policies and data for a fleet, as a gzipped tarball or a directory.
//!
//! A bundle holds a `.manifest` (`revision`, `roots`, `rego_version`, `file_rego_versions`,
//! `metadata`), `*.rego` modules, data files named `data.json`, `data.yaml` or `data.yml` at any
//! depth (`a/b/data.json` becomes `data.a.b`), and optionally `.signatures.json`. Other files are
//! ignored, as OPA ignores them.
//!
//! # Layout
//!
//! - [`archive`]  reading tarballs and directories safely (limits, links, path traversal), writing
//! - [`config`]   `bundles.<name>` and `keys` in the config file
//! - [`manifest`] the `.manifest` file and root arithmetic
//! - [`signing`]  `.signatures.json`: verification and signing
//! - [`download`] the `bundles.<name>` poller: ETag, backoff, persistence, activation
//! - [`build`]    `portcullis bundle build DIR -o bundle.tar.gz`
//!
//! A [`Bundle`] is parsed and checked here (signature, data within roots); its modules are
//! compiled, and their packages checked against the roots, when a snapshot is built from it in
//! [`crate::policy`].

pub mod archive;
pub(crate) mod config;
pub mod manifest;
pub mod signing;

use std::path::{Path, PathBuf};

pub use archive::{BundleFile, Limits};
pub use manifest::Manifest;
pub use signing::Verification;

/// Why a bundle was refused.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("not a valid gzipped tarball: {0}")]
    Archive(String),
    #[error("too large: {0}")]
    TooLarge(String),
    #[error("unsafe entry {0:?}: {1}")]
    UnsafePath(String, &'static str),
    #[error("{0:?}: links are not allowed in a bundle")]
    Link(String),
    #[error("{0:?} appears twice in the archive")]
    Duplicate(String),
    #[error("{0}")]
    Manifest(String),
    #[error("signature: {0}")]
    Signature(String),
    #[error("{path}: {message}")]
    Data { path: String, message: String },
    #[error("{0}")]
    Roots(String),
}

/// One module of a bundle.
#[derive(Debug, Clone)]
pub struct Module {
    /// The name errors show: `<bundle>/<path in the bundle>`.
    pub name: String,
    /// The path inside the bundle.
    pub path: String,
    pub text: String,
    /// Parse as Rego v0 (from `rego_version`, `file_rego_versions`, or `--v0-compatible`).
    pub rego_v0: Option<bool>,
}

/// A parsed, checked bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The config name (`bundles.<name>`) or the path it was read from.
    pub name: String,
    pub manifest: Manifest,
    pub modules: Vec<Module>,
    /// The data the bundle sets, rooted at `data`.
    pub data: serde_json::Map<String, serde_json::Value>,
    /// The ETag it was downloaded with, if any.
    pub etag: Option<String>,
    /// Whether its signature was verified.
    pub verified: bool,
}

impl Bundle {
    /// The manifest's revision.
    pub fn revision(&self) -> &str {
        &self.manifest.revision
    }

    /// The roots it owns.
    pub fn roots(&self) -> Vec<String> {
        self.manifest.roots()
    }

    /// Reads a bundle file (`.tar.gz`) or directory from disk.
    pub fn read_path(
        name: &str,
        path: &Path,
        verification: Option<&Verification>,
        limits: &Limits,
    ) -> Result<Self, BundleError> {
        Self::from_files(name, archive::read_path(path, limits)?, verification)
    }

    /// Parses a gzipped tarball held in memory.
    pub fn from_tar_gz(
        name: &str,
        bytes: &[u8],
        verification: Option<&Verification>,
        limits: &Limits,
    ) -> Result<Self, BundleError> {
        let files = archive::read_tar_gz(bytes, limits)?;
        Self::from_files(name, files, verification)
    }

    /// Builds a bundle from its files: checks the signature (required when `verification` is
    /// given, refused when it is not, as OPA does), reads the manifest, modules and data, and
    /// checks that the data stays within the roots.
    pub fn from_files(
        name: &str,
        files: Vec<BundleFile>,
        verification: Option<&Verification>,
    ) -> Result<Self, BundleError> {
        let signatures = files.iter().find(|f| f.path == signing::SIGNATURES_FILE);
        let verified = match (signatures, verification) {
            (Some(sig), Some(config)) => {
                signing::verify(sig, &files, config)?;
                true
            }
            (None, Some(_)) => {
                return Err(BundleError::Signature(
                    "the bundle is not signed (no .signatures.json) but verification is \
                     configured"
                        .into(),
                ));
            }
            (Some(_), None) => {
                return Err(BundleError::Signature(
                    "the bundle is signed but no verification key is configured (set \
                     bundles.<name>.signing and keys, or --verification-key)"
                        .into(),
                ));
            }
            (None, None) => false,
        };
        let manifest = match files.iter().find(|f| f.path == ".manifest") {
            Some(f) => Manifest::parse(&f.bytes)?,
            None => Manifest::default(),
        };
        let file_versions = file_version_globs(&manifest)?;
        let mut modules = Vec::new();
        let mut data = serde_json::Map::new();
        for file in &files {
            let base = file.path.rsplit('/').next().unwrap_or(&file.path);
            if file.path.ends_with(".rego") {
                let text =
                    String::from_utf8(file.bytes.clone()).map_err(|_| BundleError::Data {
                        path: file.path.clone(),
                        message: "not valid UTF-8".into(),
                    })?;
                let version = file_versions
                    .iter()
                    .find(|(glob, _)| glob.is_match(&file.path))
                    .map(|(_, v)| *v)
                    .or(manifest.rego_version);
                modules.push(Module {
                    name: format!("{}/{}", name.trim_end_matches('/'), file.path),
                    path: file.path.clone(),
                    text,
                    rego_v0: version.map(|v| v == 0),
                });
            } else if matches!(base, "data.json" | "data.yaml" | "data.yml") {
                let value = parse_data(file)?;
                let dir: Vec<&str> = file
                    .path
                    .rsplit_once('/')
                    .map(|(d, _)| d.split('/').collect())
                    .unwrap_or_default();
                insert_data(&mut data, &dir, value).map_err(|message| BundleError::Data {
                    path: file.path.clone(),
                    message,
                })?;
            }
        }
        modules.sort_by(|a, b| a.path.cmp(&b.path));
        let roots = manifest.roots();
        check_data_roots(&data, &roots, &mut Vec::new())?;
        Ok(Self {
            name: name.to_string(),
            manifest,
            modules,
            data,
            etag: None,
            verified,
        })
    }
}

fn file_version_globs(
    manifest: &Manifest,
) -> Result<Vec<(globset::GlobMatcher, i64)>, BundleError> {
    manifest
        .file_rego_versions
        .iter()
        .map(|(pattern, v)| {
            let glob = globset::Glob::new(pattern.trim_start_matches('/')).map_err(|e| {
                BundleError::Manifest(format!(".manifest: file_rego_versions {pattern:?}: {e}"))
            })?;
            Ok((glob.compile_matcher(), *v))
        })
        .collect()
}

fn parse_data(file: &BundleFile) -> Result<serde_json::Value, BundleError> {
    let err = |message: String| BundleError::Data {
        path: file.path.clone(),
        message,
    };
    if file.path.ends_with(".json") {
        serde_json::from_slice(&file.bytes).map_err(|e| err(e.to_string()))
    } else if file.bytes.iter().all(u8::is_ascii_whitespace) {
        Ok(serde_json::Value::Object(Default::default()))
    } else {
        yaml_serde::from_slice(&file.bytes).map_err(|e| err(e.to_string()))
    }
}

/// Puts `value` at `dir` under `data`, merging objects; two values for one leaf conflict.
fn insert_data(
    data: &mut serde_json::Map<String, serde_json::Value>,
    dir: &[&str],
    value: serde_json::Value,
) -> Result<(), String> {
    let Some((first, rest)) = dir.split_first() else {
        let serde_json::Value::Object(obj) = value else {
            return Err("data at the bundle root must be an object".into());
        };
        return merge(data, obj, &mut Vec::new());
    };
    let conflict = || format!("data.{first} is set by more than one file");
    if rest.is_empty() {
        return match data.get_mut(*first) {
            None => {
                data.insert((*first).to_string(), value);
                Ok(())
            }
            Some(serde_json::Value::Object(inner)) => match value {
                serde_json::Value::Object(obj) => {
                    merge(inner, obj, &mut vec![(*first).to_string()])
                }
                _ => Err(conflict()),
            },
            Some(_) => Err(conflict()),
        };
    }
    match data
        .entry((*first).to_string())
        .or_insert_with(|| serde_json::Value::Object(Default::default()))
    {
        serde_json::Value::Object(inner) => insert_data(inner, rest, value),
        _ => Err(conflict()),
    }
}

fn merge(
    base: &mut serde_json::Map<String, serde_json::Value>,
    over: serde_json::Map<String, serde_json::Value>,
    trail: &mut Vec<String>,
) -> Result<(), String> {
    for (k, v) in over {
        trail.push(k.clone());
        match (base.get_mut(&k), v) {
            (None, v) => {
                base.insert(k, v);
            }
            (Some(serde_json::Value::Object(b)), serde_json::Value::Object(o)) => {
                merge(b, o, trail)?;
            }
            (Some(_), _) => {
                return Err(format!(
                    "data.{} is set by more than one file",
                    trail.join(".")
                ));
            }
        }
        trail.pop();
    }
    Ok(())
}

/// Every leaf of `data` must lie within a root; an object may sit above a root.
fn check_data_roots(
    data: &serde_json::Map<String, serde_json::Value>,
    roots: &[String],
    trail: &mut Vec<String>,
) -> Result<(), BundleError> {
    for (k, v) in data {
        trail.push(k.clone());
        let path = trail.join("/");
        if !manifest::roots_contain(roots, &path) {
            let above_a_root = roots.iter().any(|r| manifest::root_contains(&path, r));
            match v {
                serde_json::Value::Object(inner) if above_a_root => {
                    check_data_roots(inner, roots, trail)?;
                }
                _ => {
                    return Err(BundleError::Roots(format!(
                        "manifest roots {roots:?} do not permit data at {path:?}"
                    )));
                }
            }
        }
        trail.pop();
    }
    Ok(())
}

/// The `data` path a package string names: `data.a.b` -> `a/b`; `data.a["b-c"]` -> `a/b-c`.
pub fn package_path(package: &str) -> String {
    let rest = package.strip_prefix("data").unwrap_or(package);
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '.' => {
                if !current.is_empty() {
                    parts.push(std::mem::take(&mut current));
                }
            }
            '[' => {
                if !current.is_empty() {
                    parts.push(std::mem::take(&mut current));
                }
                let quote = chars.next();
                for c in chars.by_ref() {
                    if Some(c) == quote {
                        break;
                    }
                    current.push(c);
                }
                let _ = chars.next(); // ']'
                parts.push(std::mem::take(&mut current));
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        parts.push(current);
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, text: &str) -> BundleFile {
        BundleFile {
            path: path.into(),
            bytes: text.as_bytes().to_vec(),
        }
    }

    #[test]
    fn data_files_map_to_their_directory() {
        let b = Bundle::from_files(
            "b",
            vec![
                file(".manifest", r#"{"revision":"7","roots":["a","c"]}"#),
                file("a/b/data.json", r#"{"x":1}"#),
                file("a/data.yaml", "y: [1]\n"),
                file("c/data.json", "[1,2]"),
                file("a/p.rego", "package a\n"),
                file("README.md", "ignored"),
            ],
            None,
        )
        .unwrap();
        assert_eq!(b.revision(), "7");
        assert_eq!(
            serde_json::Value::Object(b.data),
            serde_json::json!({"a": {"b": {"x": 1}, "y": [1]}, "c": [1, 2]})
        );
        assert_eq!(b.modules.len(), 1);
        assert_eq!(b.modules[0].name, "b/a/p.rego");
    }

    #[test]
    fn data_outside_roots_is_refused() {
        let err = Bundle::from_files(
            "b",
            vec![
                file(".manifest", r#"{"roots":["a/b"]}"#),
                file("a/data.json", r#"{"b":{"ok":1},"c":2}"#),
            ],
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("a/c"), "{err}");
    }

    #[test]
    fn conflicting_data_is_refused() {
        let err = Bundle::from_files(
            "b",
            vec![
                file("data.json", r#"{"a":{"x":1}}"#),
                file("a/data.json", r#"{"x":2}"#),
            ],
            None,
        )
        .unwrap_err();
        assert!(matches!(err, BundleError::Data { .. }), "{err}");
    }

    #[test]
    fn signed_bundle_without_keys_is_refused() {
        let err = Bundle::from_files(
            "b",
            vec![file(".signatures.json", r#"{"signatures":[]}"#)],
            None,
        )
        .unwrap_err();
        assert!(matches!(err, BundleError::Signature(_)), "{err}");
    }

    #[test]
    fn package_paths() {
        assert_eq!(package_path("data.envoy.authz"), "envoy/authz");
        assert_eq!(package_path("data.a[\"b-c\"].d"), "a/b-c/d");
        assert_eq!(package_path("data"), "");
    }
}
