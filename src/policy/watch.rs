//! `--watch`: reload the policies when a file under the PATH arguments changes.
//!
//! Events are debounced (a burst of writes from an editor or `kubectl cp` becomes one reload).
//! A reload that fails is logged and the previous snapshot keeps serving.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use super::PolicyStore;

/// How long to wait after the last change before reloading.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// A running watcher; dropping it stops watching.
pub struct PolicyWatcher {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PolicyWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts watching the store's paths. `on_reload` is told each outcome.
pub fn watch(
    store: Arc<PolicyStore>,
    on_reload: impl Fn(&Result<u64, super::PolicyError>) + Send + 'static,
) -> notify::Result<PolicyWatcher> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    // Files are watched through their directory, so that an editor's or Kubernetes'
    // replace-by-rename is seen too; events for other files in that directory are ignored.
    let roots: Vec<PathBuf> = store
        .paths()
        .iter()
        .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
        .collect();
    let relevant = roots.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && (event.kind.is_modify() || event.kind.is_create() || event.kind.is_remove())
            && event
                .paths
                .iter()
                .any(|p| relevant.iter().any(|root| p.starts_with(root)))
        {
            let _ = tx.send(());
        }
    })?;
    for root in &roots {
        if root.is_dir() {
            watcher.watch(root, RecursiveMode::Recursive)?;
        } else {
            let parent = root.parent().unwrap_or(root);
            watcher.watch(parent, RecursiveMode::NonRecursive)?;
        }
    }
    let task = tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Debounce: wait until no event arrives for DEBOUNCE.
            loop {
                match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            let store = store.clone();
            let result = tokio::task::spawn_blocking(move || store.reload()).await;
            match result {
                Ok(r) => on_reload(&r),
                Err(e) => tracing::error!(error = %e, "policy reload task failed"),
            }
        }
    });
    Ok(PolicyWatcher {
        _watcher: watcher,
        task,
    })
}
