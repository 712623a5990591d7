//! A file parsed once and re-read when it changes (checked at most once per interval), keeping
//! the last good contents when a new version does not parse or is larger than its bound.

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
    /// The largest file read.
    max_bytes: u64,
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

/// The file's text, refused when it has more than `max` bytes (read no further than that).
pub fn read_bounded(path: &Path, max: u64) -> Result<String, String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut text = String::new();
    file.take(max.saturating_add(1))
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    if text.len() as u64 > max {
        return Err(format!("larger than {max} bytes"));
    }
    Ok(text)
}

impl<T> WatchedFile<T> {
    /// Reads and parses the file; an error names the file.
    pub fn open(path: &Path, parse: fn(&str) -> Result<T, String>) -> Result<Self, String> {
        Self::open_bounded(path, u64::MAX, parse)
    }

    /// [`Self::open`] for a file of at most `max_bytes`, now and at every re-read.
    pub fn open_bounded(
        path: &Path,
        max_bytes: u64,
        parse: fn(&str) -> Result<T, String>,
    ) -> Result<Self, String> {
        let st = stamp(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let text = read_bounded(path, max_bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        let value = parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            parse,
            value: ArcSwap::from_pointee(value),
            state: Mutex::new((Instant::now(), st)),
            max_bytes,
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
        match read_bounded(&self.path, self.max_bytes).and_then(|t| (self.parse)(&t)) {
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

/// `path` opened (created owner-only when missing) and locked exclusively (`flock`) until the
/// returned file is dropped: how processes sharing a store or list serialise their writes.
pub(crate) fn lock_exclusive(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    file.lock()?;
    Ok(file)
}
