//! The store: the current snapshot behind `ArcSwap`, and how it is rebuilt.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::bundle::Bundle;

use super::*;

/// What a store loads: local PATHs, `--bundle` PATHs, and the names of configured bundles that
/// arrive later through [`PolicyStore::activate`].
#[derive(Debug, Clone, Default)]
pub struct LoadSpec {
    /// Policy and data files and directories; `.tar.gz` files are read as bundles.
    pub paths: Vec<PathBuf>,
    /// Bundle directories or archives (OPA's `--bundle`).
    pub bundle_paths: Vec<PathBuf>,
    /// `bundles.<name>` from the config: the store is ready once each has been activated.
    pub remote_bundles: Vec<String>,
}

/// The sources of the current snapshot, kept to rebuild it.
#[derive(Debug, Default)]
pub(super) struct Loaded {
    pub(super) local: Sources,
    pub(super) remote: std::collections::BTreeMap<String, Arc<Bundle>>,
}

/// The current snapshot and how to rebuild it.
pub struct PolicyStore {
    pub(super) current: ArcSwap<Snapshot>,
    pub(super) spec: LoadSpec,
    pub(super) opts: PolicyOptions,
    pub(super) revision: AtomicU64,
    pub(super) reload_lock: Mutex<Loaded>,
    /// Runtime writes, applied over the local sources at every build (see [`overlay`]).
    pub(super) overlay: Mutex<overlay::Overlay>,
    pub(super) ready: tokio::sync::watch::Sender<bool>,
    pub(super) status: download::StatusBoard,
}

impl std::fmt::Debug for PolicyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyStore")
            .field("spec", &self.spec)
            .field("revision", &self.revision.load(Ordering::Relaxed))
            .finish()
    }
}

impl PolicyStore {
    /// Loads and compiles the policies under `paths`.
    pub fn load(paths: Vec<PathBuf>, opts: PolicyOptions) -> Result<Self, PolicyError> {
        Self::load_with(
            LoadSpec {
                paths,
                ..Default::default()
            },
            opts,
        )
    }

    /// Loads the local files and bundles of `spec`. With configured bundles the store is not
    /// ready until each has been activated.
    pub fn load_with(spec: LoadSpec, opts: PolicyOptions) -> Result<Self, PolicyError> {
        let sources = read_local(&spec, &opts)?;
        let snapshot = Snapshot::build(&sources, &opts, 1)?;
        let ready = spec.remote_bundles.is_empty();
        Ok(Self {
            current: ArcSwap::from_pointee(snapshot),
            spec,
            opts,
            revision: AtomicU64::new(1),
            reload_lock: Mutex::new(Loaded {
                local: sources,
                remote: Default::default(),
            }),
            overlay: Mutex::default(),
            ready: tokio::sync::watch::Sender::new(ready),
            status: Default::default(),
        })
    }

    /// The current snapshot; no lock is taken.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The paths this store loads from (PATH arguments, then `--bundle` paths).
    pub fn paths(&self) -> Vec<PathBuf> {
        self.spec
            .paths
            .iter()
            .chain(&self.spec.bundle_paths)
            .cloned()
            .collect()
    }

    /// The configured bundles this store waits for.
    pub fn expected_bundles(&self) -> &[String] {
        &self.spec.remote_bundles
    }

    /// The options snapshots are built with.
    pub fn options(&self) -> &PolicyOptions {
        &self.opts
    }

    /// Whether every configured bundle has been activated at least once.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Watches readiness: the value turns `true` once every configured bundle is active.
    pub fn subscribe_ready(&self) -> tokio::sync::watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// Download status of the configured bundles (shared with their downloaders).
    pub fn bundle_status(&self) -> &download::StatusBoard {
        &self.status
    }

    /// Configured bundles that have not been activated yet.
    pub fn pending_bundles(&self) -> Vec<String> {
        let active: Vec<String> = self
            .snapshot()
            .bundles()
            .iter()
            .map(|b| b.name.clone())
            .collect();
        self.spec
            .remote_bundles
            .iter()
            .filter(|n| !active.contains(n))
            .cloned()
            .collect()
    }

    /// Re-reads and recompiles the local paths, keeping the active downloaded bundles. On error
    /// the current snapshot keeps serving.
    pub fn reload(&self) -> Result<u64, PolicyError> {
        let mut loaded = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        let sources = read_local(&self.spec, &self.opts)?;
        let remote: Vec<Arc<Bundle>> = loaded.remote.values().cloned().collect();
        let revision = self.swap(&self.lock_overlay().apply(&sources), &remote)?;
        loaded.local = sources;
        Ok(revision)
    }

    /// Activates a downloaded bundle (replacing the one of the same name): the new snapshot
    /// compiles with it, or nothing changes and the previous revision keeps serving.
    pub fn activate(&self, bundle: Bundle) -> Result<u64, PolicyError> {
        if !self.spec.remote_bundles.contains(&bundle.name) {
            return Err(PolicyError::bundle(
                &bundle.name,
                "not a configured bundle (bundles.<name>)",
            ));
        }
        let mut loaded = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        let name = bundle.name.clone();
        let bundle = Arc::new(bundle);
        let remote: Vec<Arc<Bundle>> = loaded
            .remote
            .iter()
            .filter(|(n, _)| **n != name)
            .map(|(_, b)| b.clone())
            .chain(std::iter::once(bundle.clone()))
            .collect();
        let revision = self.swap(&self.lock_overlay().apply(&loaded.local), &remote)?;
        loaded.remote.insert(name, bundle);
        let ready = self
            .spec
            .remote_bundles
            .iter()
            .all(|n| loaded.remote.contains_key(n));
        if ready && !*self.ready.borrow() {
            self.ready.send_replace(true);
        }
        Ok(revision)
    }

    fn swap(&self, sources: &Sources, remote: &[Arc<Bundle>]) -> Result<u64, PolicyError> {
        let revision = self.revision.load(Ordering::Relaxed) + 1;
        let snapshot = Snapshot::build_with(sources, remote, &self.opts, revision)?;
        self.revision.store(revision, Ordering::Relaxed);
        self.current.store(Arc::new(snapshot));
        Ok(revision)
    }
}

fn read_local(spec: &LoadSpec, opts: &PolicyOptions) -> Result<Sources, PolicyError> {
    Sources::read_with(
        &spec.paths,
        &spec.bundle_paths,
        &opts.ignore,
        &loader::BundleOptions {
            verification: opts.verification.as_ref(),
            skip_verify: opts.skip_verify,
            limits: &opts.bundle_limits,
        },
    )
}
