//! Namespaces: isolated sets of policies and data, each its own [`PolicyStore`].
//!
//! Names are hierarchical with `:` (`acme`, `acme:payments`); each segment is 1 to 63 of
//! `A-Z a-z 0-9 _ - .`. The hierarchy matters only for access: a scope `acme` covers `acme`
//! and `acme:…`, never `acme2` (see [`covers`]). Every namespace has its own engine: a
//! namespace never sees another's policies or data, its parent's included.
//!
//! - The **default namespace** (`default`) serves the PATH arguments; the Check path uses it
//!   when the request has no `namespace` context extension.
//! - **Configured namespaces** (`namespaces: {acme: {paths: [...]}}`) load their own paths.
//! - A gateway write to a namespace that does not exist yet **creates** it, empty but for that
//!   write (at most [`MAX_NAMESPACES`] in all, [`MAX_PER_TREE`] under one top-level name).
//!   Creating one needs nothing beyond a readwrite grant that covers it: a caller scoped to
//!   `acme` may create `acme:x`, which it could reach anyway, and never `acme2`. Runtime
//!   namespaces live in memory.
//!
//! The Check path selects a namespace only when namespaces are in use (configured, or the
//! gateway is on: [`Namespaces::selecting`]); otherwise it always uses the default namespace and
//! a `namespace` context extension means nothing, exactly as with OPA-Envoy. Lookups load an
//! `ArcSwap`ped map: no lock.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::policy::{PolicyError, PolicyOptions, PolicyStore};

/// The name of the namespace that serves the PATH arguments.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The most namespaces one process holds.
pub const MAX_NAMESPACES: usize = 1024;

/// The longest namespace name.
pub const MAX_NAME_LEN: usize = 255;

/// The most namespaces one tree (the names under one top-level segment, `acme` and `acme:…`)
/// may hold, so that the callers of one tree cannot use up [`MAX_NAMESPACES`] for the others.
pub const MAX_PER_TREE: usize = 64;

/// Why a namespace cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("invalid namespace name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("namespace {0:?} does not exist")]
    Unknown(String),
    #[error("at most {MAX_NAMESPACES} namespaces can exist")]
    Limit,
    #[error("at most {MAX_PER_TREE} namespaces can exist under {0:?}")]
    TreeLimit(String),
    #[error("namespace {name:?}: {source}")]
    Load { name: String, source: PolicyError },
}

/// Checks a namespace name.
pub fn validate_name(name: &str) -> Result<(), NamespaceError> {
    let invalid = |reason| NamespaceError::InvalidName {
        name: name.chars().take(64).collect(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(invalid("it is longer than 255 bytes"));
    }
    for segment in name.split(':') {
        if segment.is_empty() {
            return Err(invalid("a ':'-separated segment is empty"));
        }
        if segment.len() > 63 {
            return Err(invalid("a segment is longer than 63 bytes"));
        }
        if !segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            return Err(invalid(
                "a segment has characters other than letters, digits, '_', '-' and '.'",
            ));
        }
    }
    Ok(())
}

/// Whether scope `scope` covers namespace `name`: the same name, or a descendant
/// (`acme` covers `acme:payments`, never `acme2`).
pub fn covers(scope: &str, name: &str) -> bool {
    match name.strip_prefix(scope) {
        Some("") => true,
        Some(rest) => rest.starts_with(':') && !scope.is_empty(),
        None => false,
    }
}

/// Every namespace.
#[derive(Debug)]
pub struct Namespaces {
    default: Arc<PolicyStore>,
    others: ArcSwap<BTreeMap<String, Arc<PolicyStore>>>,
    opts: PolicyOptions,
    create_lock: Mutex<()>,
    selecting: bool,
}

impl Namespaces {
    /// Only the default namespace.
    pub fn new(default: Arc<PolicyStore>) -> Self {
        let opts = default.options().clone();
        Self {
            default,
            others: ArcSwap::from_pointee(BTreeMap::new()),
            opts,
            create_lock: Mutex::new(()),
            selecting: false,
        }
    }

    /// Whether the Check path selects namespaces by the `namespace` context extension.
    pub fn selecting(&self) -> bool {
        self.selecting
    }

    /// Makes the Check path select namespaces (or not).
    pub fn with_selection(mut self, selecting: bool) -> Self {
        self.selecting = selecting;
        self
    }

    /// The default namespace plus the configured ones, each loaded from its paths.
    pub fn with_configured(
        default: Arc<PolicyStore>,
        configured: &BTreeMap<String, Vec<PathBuf>>,
    ) -> Result<Self, NamespaceError> {
        let this = Self::new(default);
        let mut map = BTreeMap::new();
        for (name, paths) in configured {
            validate_name(name)?;
            let store = PolicyStore::load(paths.clone(), this.opts.clone()).map_err(|source| {
                NamespaceError::Load {
                    name: name.clone(),
                    source,
                }
            })?;
            map.insert(name.clone(), Arc::new(store));
        }
        if map.len() + 1 > MAX_NAMESPACES {
            return Err(NamespaceError::Limit);
        }
        this.others.store(Arc::new(map));
        Ok(this)
    }

    /// The default namespace's store.
    pub fn default_store(&self) -> &Arc<PolicyStore> {
        &self.default
    }

    /// A namespace's store, if it exists.
    pub fn get(&self, name: &str) -> Option<Arc<PolicyStore>> {
        if name == DEFAULT_NAMESPACE {
            return Some(self.default.clone());
        }
        self.others.load().get(name).cloned()
    }

    /// A namespace's store, or [`NamespaceError::Unknown`].
    pub fn require(&self, name: &str) -> Result<Arc<PolicyStore>, NamespaceError> {
        validate_name(name)?;
        self.get(name)
            .ok_or_else(|| NamespaceError::Unknown(name.to_string()))
    }

    /// A namespace's store, created empty (no paths) when it does not exist yet.
    pub fn get_or_create(&self, name: &str) -> Result<Arc<PolicyStore>, NamespaceError> {
        validate_name(name)?;
        if let Some(store) = self.get(name) {
            return Ok(store);
        }
        let _guard = self.create_lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(store) = self.get(name) {
            return Ok(store);
        }
        let current = self.others.load_full();
        if current.len() + 1 >= MAX_NAMESPACES {
            return Err(NamespaceError::Limit);
        }
        let tree = name.split(':').next().unwrap_or(name);
        if current.keys().filter(|n| covers(tree, n)).count() >= MAX_PER_TREE {
            return Err(NamespaceError::TreeLimit(tree.to_string()));
        }
        let store = Arc::new(PolicyStore::load(Vec::new(), self.opts.clone()).map_err(
            |source| NamespaceError::Load {
                name: name.to_string(),
                source,
            },
        )?);
        let mut next = (*current).clone();
        next.insert(name.to_string(), store.clone());
        self.others.store(Arc::new(next));
        tracing::info!(namespace = name, "namespace created");
        Ok(store)
    }

    /// Every namespace, the default first, then by name.
    pub fn all(&self) -> Vec<(String, Arc<PolicyStore>)> {
        let mut out = vec![(DEFAULT_NAMESPACE.to_string(), self.default.clone())];
        out.extend(
            self.others
                .load()
                .iter()
                .map(|(name, store)| (name.clone(), store.clone())),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        for good in ["a", "acme:payments", "a-b_c.d:e", "default"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ":",
            "a:",
            ":a",
            "a::b",
            "a b",
            "a/b",
            "é",
            &"x".repeat(300),
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn coverage_is_hierarchical_never_by_prefix() {
        assert!(covers("acme", "acme"));
        assert!(covers("acme", "acme:payments"));
        assert!(covers("acme", "acme:payments:eu"));
        assert!(!covers("acme", "acme2"));
        assert!(!covers("acme", "acm"));
        assert!(!covers("acme:payments", "acme"));
        assert!(!covers("", "acme"));
    }

    #[test]
    fn namespaces_are_created_on_demand_and_isolated() {
        let store = Arc::new(PolicyStore::load(Vec::new(), PolicyOptions::default()).unwrap());
        let ns = Namespaces::new(store);
        assert!(ns.get("acme").is_none());
        assert!(matches!(
            ns.require("acme"),
            Err(NamespaceError::Unknown(_))
        ));
        let acme = ns.get_or_create("acme").unwrap();
        acme.put_module("p.rego", "package envoy.authz\nallow := true\n")
            .unwrap();
        assert!(ns.get("acme").unwrap().snapshot().has_decision());
        assert!(!ns.default_store().snapshot().has_decision());
        assert_eq!(ns.all().len(), 2);
        assert!(ns.get_or_create("bad name").is_err());
    }
}
