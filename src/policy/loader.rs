//! Reads policy and data files from the PATH arguments, as `opa run` does.
//!
//! - a `.rego` file is a policy module;
//! - a `.json`, `.yaml` or `.yml` file is data: given directly it is merged at the root of
//!   `data`; found inside a directory argument it is merged at the path of its directory
//!   relative to that argument (`dir/a/b/data.json` -> `data.a.b`);
//! - a directory is walked recursively; names starting with `.` are skipped.
//!
//! - a `.tar.gz` / `.tgz` file is an OPA bundle, and so is every `--bundle` PATH (archive or
//!   directory); see [`crate::bundle`].
//!
//! Conflicting data (two files setting the same leaf) is an error naming both files.

use std::path::{Path, PathBuf};

use regorus::Value;

use super::PolicyError;
use crate::bundle::{self, Bundle};

/// How bundles given as PATHs are read.
#[derive(Debug, Clone, Copy)]
pub struct BundleOptions<'a> {
    pub verification: Option<&'a bundle::Verification>,
    /// Ignore `.signatures.json` (OPA's `--skip-verify`).
    pub skip_verify: bool,
    pub limits: &'a bundle::Limits,
}

/// The most one data or policy file may hold.
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// Everything read from the PATH arguments.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// (file name, Rego text), in a stable order.
    pub modules: Vec<(String, String)>,
    /// The merged data document.
    pub data: serde_json::Map<String, serde_json::Value>,
    /// Bundles read from PATHs (archives, and `--bundle` directories).
    pub bundles: Vec<Bundle>,
    /// Which file set each top-level data path, for conflict messages.
    data_origin: Vec<(Vec<String>, String)>,
    ignore: globset::GlobSet,
}

impl Sources {
    /// Reads every path, skipping directory entries whose name matches an `ignore` pattern.
    pub fn read(paths: &[PathBuf], ignore: &[String]) -> Result<Self, PolicyError> {
        let limits = bundle::Limits::default();
        Self::read_with(
            paths,
            &[],
            ignore,
            &BundleOptions {
                verification: None,
                skip_verify: false,
                limits: &limits,
            },
        )
    }

    /// Reads `paths` as [`Sources::read`] does, and each of `bundle_paths` as a bundle.
    pub fn read_with(
        paths: &[PathBuf],
        bundle_paths: &[PathBuf],
        ignore: &[String],
        bundles: &BundleOptions<'_>,
    ) -> Result<Self, PolicyError> {
        let mut builder = globset::GlobSetBuilder::new();
        for pattern in ignore {
            let glob = globset::Glob::new(pattern).map_err(|e| PolicyError::Unsupported {
                path: PathBuf::from(pattern),
                message: format!("invalid --ignore pattern: {e}"),
            })?;
            builder.add(glob);
        }
        let ignore = builder.build().map_err(|e| PolicyError::Unsupported {
            path: PathBuf::new(),
            message: format!("invalid --ignore pattern: {e}"),
        })?;
        let mut sources = Sources {
            ignore,
            ..Default::default()
        };
        for path in paths {
            let meta = std::fs::metadata(path).map_err(|source| PolicyError::Read {
                path: path.clone(),
                source,
            })?;
            if meta.is_dir() {
                sources.read_dir(path, path)?;
            } else if is_bundle_archive(path) {
                sources.read_bundle(path, bundles)?;
            } else {
                sources.read_file(path, &[])?;
            }
        }
        for path in bundle_paths {
            sources.read_bundle(path, bundles)?;
        }
        Ok(sources)
    }

    fn read_bundle(&mut self, path: &Path, opts: &BundleOptions<'_>) -> Result<(), PolicyError> {
        let name = path.display().to_string();
        let err = |e: bundle::BundleError| PolicyError::Bundle {
            name: name.clone(),
            message: e.to_string(),
        };
        let mut files = bundle::archive::read_path(path, opts.limits).map_err(err)?;
        if opts.skip_verify {
            files.retain(|f| f.path != bundle::signing::SIGNATURES_FILE);
        }
        let verification = if opts.skip_verify {
            None
        } else {
            opts.verification
        };
        let b = Bundle::from_files(&name, files, verification).map_err(err)?;
        self.bundles.push(b);
        Ok(())
    }

    /// Adds one module from memory.
    pub fn add_module(&mut self, name: String, text: String) {
        self.modules.push((name, text));
    }

    /// The data document as a regorus value.
    pub fn data_value(&self) -> Value {
        Value::from(serde_json::Value::Object(self.data.clone()))
    }

    fn read_dir(&mut self, root: &Path, dir: &Path) -> Result<(), PolicyError> {
        let read_err = |source| PolicyError::Read {
            path: dir.to_path_buf(),
            source,
        };
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(read_err)?
            .collect::<Result<_, _>>()
            .map_err(read_err)?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || self.ignore.is_match(name.as_ref()) {
                continue;
            }
            let path = entry.path();
            let file_type = entry.file_type().map_err(|source| PolicyError::Read {
                path: path.clone(),
                source,
            })?;
            if file_type.is_dir() {
                self.read_dir(root, &path)?;
            } else if is_policy_file(&path) || is_data_file(&path) {
                let prefix: Vec<String> = path
                    .parent()
                    .and_then(|p| p.strip_prefix(root).ok())
                    .map(|rel| {
                        rel.components()
                            .map(|c| c.as_os_str().to_string_lossy().into_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                self.read_file(&path, &prefix)?;
            }
        }
        Ok(())
    }

    fn read_file(&mut self, path: &Path, prefix: &[String]) -> Result<(), PolicyError> {
        if !is_policy_file(path) && !is_data_file(path) {
            return Err(PolicyError::Unsupported {
                path: path.to_path_buf(),
                message: "expected a .rego, .json, .yaml or .yml file or a directory".into(),
            });
        }
        let text = read_bounded(path)?;
        if is_policy_file(path) {
            self.modules.push((path.display().to_string(), text));
            return Ok(());
        }
        let value: serde_json::Value = if has_ext(path, "json") {
            serde_json::from_str(&text).map_err(|e| PolicyError::Data {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?
        } else if text.trim().is_empty() {
            serde_json::Value::Null
        } else {
            yaml_serde::from_str(&text).map_err(|e| PolicyError::Data {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?
        };
        let value = match value {
            serde_json::Value::Null => return Ok(()),
            v => v,
        };
        self.merge_data(prefix, value, path)
    }

    fn merge_data(
        &mut self,
        prefix: &[String],
        value: serde_json::Value,
        file: &Path,
    ) -> Result<(), PolicyError> {
        let mut wrapped = value;
        for part in prefix.iter().rev() {
            let mut m = serde_json::Map::new();
            m.insert(part.clone(), wrapped);
            wrapped = serde_json::Value::Object(m);
        }
        let serde_json::Value::Object(obj) = wrapped else {
            return Err(PolicyError::Data {
                path: file.to_path_buf(),
                message: "data at the root must be an object".into(),
            });
        };
        let file_name = file.display().to_string();
        let mut trail = Vec::new();
        merge_objects(&mut self.data, obj, &mut trail).map_err(|conflict| {
            let other = self
                .data_origin
                .iter()
                .find(|(p, _)| conflict.starts_with(p))
                .map(|(_, f)| f.clone())
                .unwrap_or_else(|| "another file".into());
            PolicyError::Data {
                path: file.to_path_buf(),
                message: format!("data.{} is also set by {other}", conflict.join(".")),
            }
        })?;
        let top: Vec<String> = prefix.iter().take(1).cloned().collect();
        self.data_origin.push((top, file_name));
        Ok(())
    }
}

/// Deep-merges objects; two different non-object values at one path conflict.
pub(crate) fn merge_objects(
    base: &mut serde_json::Map<String, serde_json::Value>,
    over: serde_json::Map<String, serde_json::Value>,
    trail: &mut Vec<String>,
) -> Result<(), Vec<String>> {
    for (k, v) in over {
        trail.push(k.clone());
        match (base.get_mut(&k), v) {
            (None, v) => {
                base.insert(k, v);
            }
            (Some(serde_json::Value::Object(b)), serde_json::Value::Object(o)) => {
                merge_objects(b, o, trail)?;
            }
            (Some(existing), v) if *existing == v => {}
            (Some(_), _) => return Err(trail.clone()),
        }
        trail.pop();
    }
    Ok(())
}

fn read_bounded(path: &Path) -> Result<String, PolicyError> {
    let meta = std::fs::metadata(path).map_err(|source| PolicyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(PolicyError::Unsupported {
            path: path.to_path_buf(),
            message: format!("file is larger than {MAX_FILE_BYTES} bytes"),
        });
    }
    let bytes = std::fs::read(path).map_err(|source| PolicyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|_| PolicyError::Unsupported {
        path: path.to_path_buf(),
        message: "file is not valid UTF-8".into(),
    })
}

fn has_ext(path: &Path, ext: &str) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case(ext))
}

fn is_policy_file(path: &Path) -> bool {
    has_ext(path, "rego")
}

fn is_data_file(path: &Path) -> bool {
    has_ext(path, "json") || has_ext(path, "yaml") || has_ext(path, "yml")
}

fn is_bundle_archive(path: &Path) -> bool {
    let name = path.to_string_lossy();
    name.ends_with(".tar.gz") || name.ends_with(".tgz")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_data_maps_to_its_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/data.json"), r#"{"x": 1}"#).unwrap();
        std::fs::write(dir.path().join("top.yaml"), "y: [1, 2]\n").unwrap();
        std::fs::write(dir.path().join("p.rego"), "package p\n").unwrap();
        std::fs::write(dir.path().join(".hidden.rego"), "garbage").unwrap();
        std::fs::write(dir.path().join("README.md"), "ignored").unwrap();
        let s = Sources::read(&[dir.path().to_path_buf()], &["*.md".to_string()]).unwrap();
        assert_eq!(s.modules.len(), 1);
        assert_eq!(
            serde_json::Value::Object(s.data.clone()),
            serde_json::json!({"a": {"b": {"x": 1}}, "y": [1, 2]})
        );
    }

    #[test]
    fn conflicting_data_is_an_error_naming_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.json");
        let b = dir.path().join("b.json");
        std::fs::write(&a, r#"{"x": {"y": 1}}"#).unwrap();
        std::fs::write(&b, r#"{"x": {"y": 2}}"#).unwrap();
        let err = Sources::read(&[a, b.clone()], &[]).unwrap_err().to_string();
        assert!(err.contains("b.json"), "{err}");
        assert!(err.contains("data.x.y"), "{err}");
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "{").unwrap();
        assert!(matches!(
            Sources::read(&[bad], &[]).unwrap_err(),
            PolicyError::Data { .. }
        ));
        let missing = dir.path().join("missing.rego");
        assert!(matches!(
            Sources::read(&[missing], &[]).unwrap_err(),
            PolicyError::Read { .. }
        ));
        let arr = dir.path().join("arr.json");
        std::fs::write(&arr, "[1]").unwrap();
        assert!(Sources::read(&[arr], &[]).is_err());
        let txt = dir.path().join("x.txt");
        std::fs::write(&txt, "").unwrap();
        assert!(matches!(
            Sources::read(&[txt], &[]).unwrap_err(),
            PolicyError::Unsupported { .. }
        ));
    }
}
