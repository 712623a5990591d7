//! Runtime writes (the gateway's `PutPolicy`, `PutData`, ...) layered over the files.
//!
//! An [`Overlay`] holds the modules and data written at run time. Every snapshot of a
//! [`PolicyStore`] is built from the files *with the overlay applied*, so gateway writes
//! survive a reload of the files. Precedence:
//!
//! - a written module replaces a file module with the same id (its file path) and is added
//!   otherwise; deleting it lets the file module serve again;
//! - data writes are kept as an ordered list of set/remove operations on paths and replayed
//!   over the file data at every build; a later write to a path (or a parent) supersedes the
//!   earlier ones below it, so the list never grows beyond the number of distinct paths;
//!   setting below a non-object replaces it with an object.
//!
//! A write builds and compiles the new snapshot first and swaps it in only when that succeeds:
//! a module that does not compile is refused and the previous policies keep serving.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::{Map, Value as Json};

use super::{Bundle, PolicyError, PolicyStore, Snapshot, Sources};

/// The most modules the overlay of one store may hold.
pub const MAX_MODULES: usize = 1024;
/// The most data operations the overlay of one store may hold.
pub const MAX_DATA_OPS: usize = 4096;
/// The most bytes (module text plus data as JSON) the overlay of one store may hold.
pub const MAX_BYTES: usize = 16 * 1024 * 1024;
/// The most bytes the overlays of all stores of the process may hold together.
pub const MAX_TOTAL_BYTES: usize = 256 * 1024 * 1024;

/// Bytes held by every overlay of the process.
static TOTAL_BYTES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Why a runtime write was refused.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Nothing to delete.
    #[error("{0} not found")]
    NotFound(String),
    /// The module exists only as a file; remove the file instead.
    #[error("policy {0:?} is loaded from a file and was not written through the gateway")]
    FileOnly(String),
    /// A bad id, path or value.
    #[error("{0}")]
    Invalid(String),
    /// Too many modules or data operations.
    #[error("{0}")]
    Limit(String),
    /// The new policies do not build; the message starts with `file:line:col` when it is a
    /// parse or compile error.
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// Where a module comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleSource {
    File,
    Gateway,
}

/// One module of the current snapshot.
#[derive(Debug, Clone)]
pub struct ModuleInfo {
    pub id: String,
    pub source: ModuleSource,
    /// A gateway module that replaces a file module of the same id.
    pub shadows_file: bool,
    pub text: String,
}

impl ModuleInfo {
    /// The module's `package` as written (`envoy.authz`), empty when none is found.
    pub fn package(&self) -> String {
        self.text
            .lines()
            .map(|l| l.split('#').next().unwrap_or_default().trim())
            .find_map(|l| l.strip_prefix("package "))
            .map(|p| p.trim().to_string())
            .unwrap_or_default()
    }
}

/// One data write of [`PolicyStore::update_data`]: a path, and the value to set there (`None`
/// removes it).
pub type DataWrite = (Vec<String>, Option<Json>);

/// The modules and data written at run time.
#[derive(Debug, Clone, Default)]
pub struct Overlay {
    modules: BTreeMap<String, String>,
    /// (path, Some(value) to set | None to remove), in the order written.
    data: Vec<(Vec<String>, Option<Json>)>,
}

impl Overlay {
    /// The files with the overlay applied.
    pub fn apply(&self, files: &Sources) -> Sources {
        let mut out = files.clone();
        out.modules
            .retain(|(name, _)| !self.modules.contains_key(name));
        for (id, text) in &self.modules {
            out.modules.push((id.clone(), text.clone()));
        }
        for (path, value) in &self.data {
            match value {
                Some(v) => set_path(&mut out.data, path, v.clone()),
                None => {
                    remove_path(&mut out.data, path);
                }
            }
        }
        out
    }

    /// Whether a module with this id was written.
    pub fn has_module(&self, id: &str) -> bool {
        self.modules.contains_key(id)
    }

    fn put_module(&mut self, id: &str, text: &str) -> Result<(), WriteError> {
        validate_id(id)?;
        if !self.modules.contains_key(id) && self.modules.len() >= MAX_MODULES {
            return Err(WriteError::Limit(format!(
                "a namespace holds at most {MAX_MODULES} written modules"
            )));
        }
        self.modules.insert(id.to_string(), text.to_string());
        Ok(())
    }

    /// Module text plus data (as JSON) held, in bytes.
    fn bytes(&self) -> usize {
        let modules: usize = self.modules.iter().map(|(id, t)| id.len() + t.len()).sum();
        let data: usize = self
            .data
            .iter()
            .map(|(p, v)| {
                p.iter().map(|s| s.len() + 1).sum::<usize>()
                    + v.as_ref().map_or(0, |v| v.to_string().len())
            })
            .sum();
        modules + data
    }

    fn push_data(&mut self, path: &[String], value: Option<Json>) -> Result<(), WriteError> {
        // Operations at or below `path` are superseded.
        self.data.retain(|(p, _)| !p.starts_with(path));
        if self.data.len() >= MAX_DATA_OPS {
            return Err(WriteError::Limit(format!(
                "a namespace holds at most {MAX_DATA_OPS} data writes"
            )));
        }
        self.data.push((path.to_vec(), value));
        Ok(())
    }
}

/// Checks a module id: 1 to 256 printable characters.
fn validate_id(id: &str) -> Result<(), WriteError> {
    if id.is_empty() || id.len() > 256 {
        return Err(WriteError::Invalid(
            "a policy id has 1 to 256 characters".into(),
        ));
    }
    if id.chars().any(char::is_control) {
        return Err(WriteError::Invalid(
            "a policy id has no control characters".into(),
        ));
    }
    Ok(())
}

/// Splits a slash-separated data path (`a/b/c`, leading and trailing slashes ignored).
pub fn split_path(path: &str) -> Result<Vec<String>, WriteError> {
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    let parts: Vec<String> = trimmed.split('/').map(str::to_string).collect();
    if parts.iter().any(String::is_empty) {
        return Err(WriteError::Invalid(format!(
            "data path {path:?} has an empty segment"
        )));
    }
    if parts.len() > 64 {
        return Err(WriteError::Invalid(
            "a data path has at most 64 segments".into(),
        ));
    }
    Ok(parts)
}

fn set_path(root: &mut Map<String, Json>, path: &[String], value: Json) {
    let Some((last, parents)) = path.split_last() else {
        if let Json::Object(m) = value {
            *root = m;
        }
        return;
    };
    let mut node = root;
    for part in parents {
        let slot = node
            .entry(part.clone())
            .or_insert_with(|| Json::Object(Map::new()));
        if !slot.is_object() {
            *slot = Json::Object(Map::new());
        }
        let Json::Object(next) = slot else {
            return;
        };
        node = next;
    }
    node.insert(last.clone(), value);
}

fn remove_path(root: &mut Map<String, Json>, path: &[String]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        let had = !root.is_empty();
        root.clear();
        return had;
    };
    let mut node = root;
    for part in parents {
        match node.get_mut(part) {
            Some(Json::Object(next)) => node = next,
            _ => return false,
        }
    }
    node.remove(last).is_some()
}

fn get_path<'a>(root: &'a Map<String, Json>, path: &[String]) -> Option<&'a Json> {
    let (first, rest) = path.split_first()?;
    let mut node = root.get(first)?;
    for part in rest {
        node = node.as_object()?.get(part)?;
    }
    Some(node)
}

impl PolicyStore {
    /// Adds or replaces a module; compiled before it swaps. Returns the new revision.
    pub fn put_module(&self, id: &str, text: &str) -> Result<u64, WriteError> {
        self.write(|overlay, _| overlay.put_module(id, text).map(|()| true))
    }

    /// Removes a module written at run time. Returns the new revision.
    pub fn delete_module(&self, id: &str) -> Result<u64, WriteError> {
        self.write(|overlay, files| {
            if overlay.modules.remove(id).is_some() {
                return Ok(true);
            }
            if files.modules.iter().any(|(name, _)| name == id) {
                return Err(WriteError::FileOnly(id.to_string()));
            }
            Err(WriteError::NotFound(format!("policy {id:?}")))
        })
    }

    /// Sets the data document at a slash-separated path. Returns the new revision.
    pub fn put_data(&self, path: &str, value: Json) -> Result<u64, WriteError> {
        let parts = split_path(path)?;
        if parts.is_empty() && !value.is_object() {
            return Err(WriteError::Invalid(
                "the root of the data document must be an object".into(),
            ));
        }
        self.write(|overlay, _| overlay.push_data(&parts, Some(value)).map(|()| true))
    }

    /// Removes the data document at a slash-separated path. Returns the new revision.
    pub fn delete_data(&self, path: &str) -> Result<u64, WriteError> {
        let parts = split_path(path)?;
        self.write(|overlay, files| {
            let merged = overlay.apply(files);
            let exists = if parts.is_empty() {
                !merged.data.is_empty()
            } else {
                get_path(&merged.data, &parts).is_some()
            };
            if !exists {
                return Err(WriteError::NotFound(format!("data at {path:?}")));
            }
            overlay.push_data(&parts, None).map(|()| true)
        })
    }

    /// Changes the data document in one step: `change` reads the current data (the files with
    /// the overlay applied; downloaded bundles' data is not in it) and returns the paths to set
    /// (`Some`) or remove (`None`), plus a value handed back to the caller. The new snapshot is
    /// built once for all of them; with no paths nothing is rebuilt and the revision stays.
    pub fn update_data<T>(
        &self,
        change: impl FnOnce(&Map<String, Json>) -> Result<(Vec<DataWrite>, T), WriteError>,
    ) -> Result<(u64, T), WriteError> {
        let mut out = None;
        let revision = self.write(|overlay, files| {
            let merged = overlay.apply(files);
            let (writes, value) = change(&merged.data)?;
            out = Some(value);
            let changed = !writes.is_empty();
            for (path, value) in writes {
                overlay.push_data(&path, value)?;
            }
            Ok(changed)
        })?;
        match out {
            Some(value) => Ok((revision, value)),
            None => Err(WriteError::Invalid("the data change did not run".into())),
        }
    }

    /// The modules of the current overlay and files, with where each comes from (modules of
    /// downloaded bundles are not listed).
    pub fn module_infos(&self) -> Vec<ModuleInfo> {
        let loaded = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        let overlay = self.lock_overlay().clone();
        let files = &loaded.local;
        let mut out: Vec<ModuleInfo> = files
            .modules
            .iter()
            .filter(|(name, _)| !overlay.has_module(name))
            .map(|(name, text)| ModuleInfo {
                id: name.clone(),
                source: ModuleSource::File,
                shadows_file: false,
                text: text.clone(),
            })
            .collect();
        for (id, text) in &overlay.modules {
            out.push(ModuleInfo {
                id: id.clone(),
                source: ModuleSource::Gateway,
                shadows_file: files.modules.iter().any(|(name, _)| name == id),
                text: text.clone(),
            });
        }
        out
    }

    /// Applies `change` to a copy of the overlay, builds the snapshot it gives and swaps both
    /// in; on any error nothing changes. When `change` reports no change (`false`), nothing is
    /// rebuilt and the current revision is returned.
    fn write(
        &self,
        change: impl FnOnce(&mut Overlay, &Sources) -> Result<bool, WriteError>,
    ) -> Result<u64, WriteError> {
        // A process already past its memory bound takes no more writes.
        regorus::check_global_memory_limit()
            .map_err(|e| WriteError::Limit(format!("the process is over its memory bound: {e}")))?;
        let loaded = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = self.lock_overlay().clone();
        if !change(&mut next, &loaded.local)? {
            return Ok(self.revision.load(Ordering::Relaxed));
        }
        let (before, after) = (self.lock_overlay().bytes(), next.bytes());
        if after > MAX_BYTES {
            return Err(WriteError::Limit(format!(
                "a namespace holds at most {MAX_BYTES} bytes of written modules and data"
            )));
        }
        let total = TOTAL_BYTES.load(Ordering::Relaxed);
        if after > before && total.saturating_add(after - before) > MAX_TOTAL_BYTES {
            return Err(WriteError::Limit(format!(
                "all namespaces together hold at most {MAX_TOTAL_BYTES} bytes of written modules \
                 and data"
            )));
        }
        let remote: Vec<Arc<Bundle>> = loaded.remote.values().cloned().collect();
        let revision = self.revision.load(Ordering::Relaxed) + 1;
        let snapshot =
            Snapshot::build_with(&next.apply(&loaded.local), &remote, &self.opts, revision)?;
        if after >= before {
            TOTAL_BYTES.fetch_add(after - before, Ordering::Relaxed);
        } else {
            TOTAL_BYTES.fetch_sub(before - after, Ordering::Relaxed);
        }
        *self.lock_overlay() = next;
        self.revision.store(revision, Ordering::Relaxed);
        self.current.store(Arc::new(snapshot));
        Ok(revision)
    }

    /// The overlay; taken after `reload_lock` whenever both are held.
    pub(super) fn lock_overlay(&self) -> std::sync::MutexGuard<'_, Overlay> {
        self.overlay.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicyOptions;

    fn store(dir: &std::path::Path) -> PolicyStore {
        std::fs::write(
            dir.join("policy.rego"),
            "package envoy.authz\n\nallow if data.users[input.user]\n",
        )
        .unwrap();
        std::fs::write(dir.join("data.json"), r#"{"users": {"alice": true}}"#).unwrap();
        PolicyStore::load(
            vec![dir.join("policy.rego"), dir.join("data.json")],
            PolicyOptions::default(),
        )
        .unwrap()
    }

    fn allows(store: &PolicyStore, user: &str) -> bool {
        let input = regorus::Value::from_json_str(&format!(r#"{{"user": "{user}"}}"#)).unwrap();
        store.snapshot().eval(input).unwrap().value == regorus::Value::from(true)
    }

    #[test]
    fn data_writes_survive_a_reload_of_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        assert!(!allows(&s, "bob"));
        s.put_data("users/bob", Json::Bool(true)).unwrap();
        assert!(allows(&s, "bob"));
        std::fs::write(
            dir.path().join("data.json"),
            r#"{"users": {"alice": true, "carol": true}}"#,
        )
        .unwrap();
        s.reload().unwrap();
        assert!(allows(&s, "bob") && allows(&s, "carol") && allows(&s, "alice"));
        s.delete_data("users/alice").unwrap();
        assert!(!allows(&s, "alice"));
        assert!(matches!(
            s.delete_data("users/nobody"),
            Err(WriteError::NotFound(_))
        ));
        // A later write to a parent supersedes the earlier ones below it.
        s.put_data("users", serde_json::json!({"dave": true}))
            .unwrap();
        assert!(allows(&s, "dave") && !allows(&s, "bob") && !allows(&s, "carol"));
        assert_eq!(s.lock_overlay().data.len(), 1);
    }

    #[test]
    fn broken_module_is_refused_and_the_old_one_serves() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let before = s.snapshot().revision();
        let err = s
            .put_module(
                "extra.rego",
                "package envoy.authz\nallow if {\n  input.x ==\n}\n",
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("extra.rego:"), "{err}");
        assert_eq!(s.snapshot().revision(), before);
        assert!(allows(&s, "alice"));
    }

    #[test]
    fn written_module_shadows_the_file_and_survives_reload() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let file_id = dir.path().join("policy.rego").display().to_string();
        s.put_module(
            &file_id,
            "package envoy.authz\n\nallow if input.user == \"zed\"\n",
        )
        .unwrap();
        assert!(allows(&s, "zed") && !allows(&s, "alice"));
        s.reload().unwrap();
        assert!(allows(&s, "zed"));
        let infos = s.module_infos();
        assert_eq!(infos.len(), 1);
        assert!(infos[0].shadows_file);
        s.delete_module(&file_id).unwrap();
        assert!(allows(&s, "alice") && !allows(&s, "zed"));
        assert!(matches!(
            s.delete_module(&file_id),
            Err(WriteError::FileOnly(_))
        ));
        assert!(matches!(
            s.delete_module("nope"),
            Err(WriteError::NotFound(_))
        ));
    }

    #[test]
    fn paths_split_strictly() {
        assert_eq!(split_path("/a/b/").unwrap(), vec!["a", "b"]);
        assert!(split_path("").unwrap().is_empty());
        assert!(split_path("a//b").is_err());
    }
}
