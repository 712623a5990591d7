// Copyright (c) Microsoft Corporation.
// Licensed under the MIT License.

//! Compiled-pattern caches for Rego builtins.
//!
//! When the `cache` feature is enabled, compiled [`regex::Regex`] and
//! [`globset::GlobMatcher`] objects are held in bounded LRU caches so that
//! repeated evaluations of the same pattern avoid recompilation.
//!
//! # Examples
//!
//! ```ignore
//! use regorus::cache;
//!
//! // Configure cache capacities (0 = disabled).
//! cache::configure(cache::Config {
//!     regex: 256,
//!     glob: 128,
//! });
//!
//! // Flush all cached patterns.
//! cache::clear();
//! ```

#[cfg(any(feature = "regex", feature = "glob"))]
use core::num::NonZeroUsize;
#[cfg(all(not(feature = "std"), any(feature = "regex", feature = "glob")))]
use lazy_static::lazy_static;
#[cfg(all(not(feature = "std"), any(feature = "regex", feature = "glob")))]
use spin::Mutex;

#[cfg(any(feature = "regex", feature = "glob"))]
use alloc::string::String;

/// Configuration for builtin pattern caches.
///
/// Each field controls the maximum number of compiled patterns held in the
/// corresponding LRU cache.  A value of `0` disables that cache entirely
/// (every lookup recompiles).  Values exceeding [`Config::MAX_CAPACITY`] are
/// clamped silently.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Maximum compiled regex patterns (default 256).
    pub regex: usize,
    /// Maximum compiled glob matchers (default 128).
    pub glob: usize,
}

impl Config {
    /// Hard upper bound for any single cache capacity (2^16 = 65 536).
    pub const MAX_CAPACITY: usize = 1 << 16;
}

impl Default for Config {
    fn default() -> Self {
        Self {
            regex: 256,
            glob: 128,
        }
    }
}

// ---------------------------------------------------------------------------
// Internal generic LRU wrapper
// ---------------------------------------------------------------------------

#[cfg(any(feature = "regex", feature = "glob"))]
pub(crate) struct LruCache<V> {
    inner: Option<lru::LruCache<String, V>>,
}

#[cfg(any(feature = "regex", feature = "glob"))]
impl<V> LruCache<V> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            inner: NonZeroUsize::new(capacity).map(lru::LruCache::new),
        }
    }

    /// Look up a key, returning a reference if present. Promotes to most-recent.
    pub(crate) fn get(&mut self, key: &str) -> Option<&V> {
        self.inner.as_mut()?.get(key)
    }

    /// Insert a key-value pair. Evicts the least-recently-used entry if full.
    pub(crate) fn put(&mut self, key: String, value: V) {
        if let Some(cache) = self.inner.as_mut() {
            cache.put(key, value);
        }
    }

    /// Remove all entries.
    pub(crate) fn clear(&mut self) {
        if let Some(cache) = self.inner.as_mut() {
            cache.clear();
        }
    }

    /// Resize the cache. If new capacity is 0, disables the cache.
    pub(crate) fn resize(&mut self, capacity: usize) {
        match NonZeroUsize::new(capacity) {
            Some(cap) => match self.inner.as_mut() {
                Some(cache) => cache.resize(cap),
                None => self.inner = Some(lru::LruCache::new(cap)),
            },
            None => {
                self.inner = None;
            }
        }
    }

    /// Number of entries currently cached.
    #[allow(dead_code)]
    pub(crate) fn len(&self) -> usize {
        self.inner.as_ref().map_or(0, lru::LruCache::len)
    }
}

// ---------------------------------------------------------------------------
// The caches
//
// With `std`, each thread keeps its own caches: a lookup takes no lock and touches no memory
// shared with other threads (a global cache behind one mutex, whose LRU lookup is itself a
// write, serialised every `glob.match` and `regex.*` call of every evaluating thread), and
// hands out an `Rc` instead of cloning the compiled pattern. `configure` and `clear` set a
// capacity and a generation that every thread's cache applies at its next lookup. Without
// `std` there are no thread-locals: one global cache behind a spin lock, as before.
// ---------------------------------------------------------------------------

/// A compiled pattern as the caches hand it out.
#[cfg(feature = "std")]
pub(crate) type Compiled<T> = std::rc::Rc<T>;
/// A compiled pattern as the caches hand it out.
#[cfg(not(feature = "std"))]
pub(crate) type Compiled<T> = T;

#[cfg(any(feature = "regex", feature = "glob"))]
static REGEX_CAPACITY: core::sync::atomic::AtomicUsize =
    core::sync::atomic::AtomicUsize::new(256);
#[cfg(any(feature = "regex", feature = "glob"))]
static GLOB_CAPACITY: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(128);
#[cfg(all(feature = "std", any(feature = "regex", feature = "glob")))]
static GENERATION: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

#[cfg(all(feature = "std", any(feature = "regex", feature = "glob")))]
struct ThreadCache<V> {
    lru: LruCache<Compiled<V>>,
    capacity: usize,
    generation: u64,
}

#[cfg(all(feature = "std", any(feature = "regex", feature = "glob")))]
impl<V> ThreadCache<V> {
    fn new() -> Self {
        Self {
            lru: LruCache::new(0),
            capacity: 0,
            generation: u64::MAX,
        }
    }

    /// The compiled `pattern`, compiled and kept on a miss.
    fn get_or_compile<E>(
        &mut self,
        capacity: usize,
        pattern: &str,
        compile: impl FnOnce(&str) -> core::result::Result<V, E>,
    ) -> core::result::Result<Compiled<V>, E> {
        use core::sync::atomic::Ordering::Relaxed;
        let generation = GENERATION.load(Relaxed);
        if generation != self.generation {
            self.lru.clear();
            self.generation = generation;
        }
        if capacity != self.capacity {
            self.lru.resize(capacity);
            self.capacity = capacity;
        }
        if let Some(v) = self.lru.get(pattern) {
            return Ok(v.clone());
        }
        let v = Compiled::new(compile(pattern)?);
        self.lru.put(String::from(pattern), v.clone());
        Ok(v)
    }
}

#[cfg(all(feature = "std", feature = "regex"))]
std::thread_local! {
    static REGEX_CACHE: core::cell::RefCell<ThreadCache<regex::Regex>> =
        core::cell::RefCell::new(ThreadCache::new());
}

#[cfg(all(feature = "std", feature = "glob"))]
std::thread_local! {
    static GLOB_CACHE: core::cell::RefCell<ThreadCache<globset::GlobMatcher>> =
        core::cell::RefCell::new(ThreadCache::new());
}

#[cfg(all(not(feature = "std"), feature = "regex"))]
lazy_static! {
    static ref REGEX_CACHE: Mutex<LruCache<regex::Regex>> =
        Mutex::new(LruCache::new(Config::default().regex));
}

#[cfg(all(not(feature = "std"), feature = "glob"))]
lazy_static! {
    static ref GLOB_CACHE: Mutex<LruCache<globset::GlobMatcher>> =
        Mutex::new(LruCache::new(Config::default().glob));
}

/// The compiled regex for `pattern`, from the cache or compiled by `compile` (and kept).
#[cfg(feature = "regex")]
pub(crate) fn regex<E>(
    pattern: &str,
    compile: impl FnOnce(&str) -> core::result::Result<regex::Regex, E>,
) -> core::result::Result<Compiled<regex::Regex>, E> {
    use core::sync::atomic::Ordering::Relaxed;
    #[cfg(feature = "std")]
    {
        let capacity = REGEX_CAPACITY.load(Relaxed);
        REGEX_CACHE.with(|c| c.borrow_mut().get_or_compile(capacity, pattern, compile))
    }
    #[cfg(not(feature = "std"))]
    {
        let _ = REGEX_CAPACITY.load(Relaxed);
        if let Some(re) = REGEX_CACHE.lock().get(pattern) {
            return Ok(re.clone());
        }
        let re = compile(pattern)?;
        REGEX_CACHE.lock().put(String::from(pattern), re.clone());
        Ok(re)
    }
}

/// The compiled glob matcher for `pattern`, from the cache or compiled by `compile` (and kept).
#[cfg(feature = "glob")]
pub(crate) fn glob<E>(
    pattern: &str,
    compile: impl FnOnce(&str) -> core::result::Result<globset::GlobMatcher, E>,
) -> core::result::Result<Compiled<globset::GlobMatcher>, E> {
    use core::sync::atomic::Ordering::Relaxed;
    #[cfg(feature = "std")]
    {
        let capacity = GLOB_CAPACITY.load(Relaxed);
        GLOB_CACHE.with(|c| c.borrow_mut().get_or_compile(capacity, pattern, compile))
    }
    #[cfg(not(feature = "std"))]
    {
        let _ = GLOB_CAPACITY.load(Relaxed);
        if let Some(g) = GLOB_CACHE.lock().get(pattern) {
            return Ok(g.clone());
        }
        let g = compile(pattern)?;
        GLOB_CACHE.lock().put(String::from(pattern), g.clone());
        Ok(g)
    }
}

// ---------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------

/// Apply a new cache configuration.
///
/// Resizes each cache to the specified capacity (with `std`, each thread's cache at its next
/// lookup).  Existing entries are preserved (subject to LRU eviction if the new capacity is
/// smaller).  Values exceeding [`Config::MAX_CAPACITY`] are clamped.
pub fn configure(config: Config) {
    #[cfg(any(feature = "regex", feature = "glob"))]
    {
        use core::sync::atomic::Ordering::Relaxed;
        let regex = config.regex.min(Config::MAX_CAPACITY);
        let glob = config.glob.min(Config::MAX_CAPACITY);
        REGEX_CAPACITY.store(regex, Relaxed);
        GLOB_CAPACITY.store(glob, Relaxed);
        #[cfg(all(not(feature = "std"), feature = "regex"))]
        REGEX_CACHE.lock().resize(regex);
        #[cfg(all(not(feature = "std"), feature = "glob"))]
        GLOB_CACHE.lock().resize(glob);
    }
    #[cfg(not(any(feature = "regex", feature = "glob")))]
    let _ = config;
}

/// Remove all entries from every pattern cache (with `std`, each thread's cache at its next
/// lookup).
pub fn clear() {
    #[cfg(all(feature = "std", any(feature = "regex", feature = "glob")))]
    GENERATION.fetch_add(1, core::sync::atomic::Ordering::Relaxed);

    #[cfg(all(not(feature = "std"), feature = "regex"))]
    REGEX_CACHE.lock().clear();

    #[cfg(all(not(feature = "std"), feature = "glob"))]
    GLOB_CACHE.lock().clear();
}
