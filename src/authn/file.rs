//! A file parsed once and re-read when it changes (checked at most once per interval), keeping
//! the last good contents when a new version does not parse.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;

/// How often the file's metadata is looked at.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// What identifies a version of a file.
type Stamp = (Option<SystemTime>, u64);

/// A parsed file that follows changes on disk.
pub struct WatchedFile<T> {
    path: PathBuf,
    parse: fn(&str) -> Result<T, String>,
    value: ArcSwap<T>,
    state: Mutex<(Instant, Stamp)>,
}

impl<T> std::fmt::Debug for WatchedFile<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchedFile")
            .field("path", &self.path)
            .finish()
    }
}

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    let meta = std::fs::metadata(path)?;
    Ok((meta.modified().ok(), meta.len()))
}

impl<T> WatchedFile<T> {
    /// Reads and parses the file; an error names the file.
    pub fn open(path: &Path, parse: fn(&str) -> Result<T, String>) -> Result<Self, String> {
        let st = stamp(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let value = parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            parse,
            value: ArcSwap::from_pointee(value),
            state: Mutex::new((Instant::now(), st)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current contents, re-read first when the check interval has passed and the file's
    /// modification time or size changed.
    pub fn get(&self) -> Arc<T> {
        self.refresh(false);
        self.value.load_full()
    }

    /// Replaces the contents (after this process wrote the file itself).
    pub fn set(&self, value: T) {
        self.value.store(Arc::new(value));
        if let Ok(mut st) = self.state.lock()
            && let Ok(s) = stamp(&self.path)
        {
            *st = (Instant::now(), s);
        }
    }

    /// Re-reads the file if it changed; with `force`, regardless of the interval.
    pub fn refresh(&self, force: bool) {
        let Ok(mut st) = self.state.try_lock() else {
            // Someone else is checking right now.
            return;
        };
        if !force && st.0.elapsed() < CHECK_INTERVAL {
            return;
        }
        st.0 = Instant::now();
        let Ok(new) = stamp(&self.path) else {
            tracing::warn!(file = %self.path.display(), "cannot stat file; keeping the last good version");
            return;
        };
        if new == st.1 && !force {
            return;
        }
        match std::fs::read_to_string(&self.path)
            .map_err(|e| e.to_string())
            .and_then(|t| (self.parse)(&t))
        {
            Ok(v) => {
                st.1 = new;
                self.value.store(Arc::new(v));
                tracing::info!(file = %self.path.display(), "reloaded");
            }
            Err(e) => {
                // Keep the stamp unchanged so a fixed file is picked up next time.
                tracing::error!(file = %self.path.display(), error = %e, "reload failed; keeping the last good version");
            }
        }
    }
}
