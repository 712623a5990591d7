//! A per-thread cache of JWT signature verifications.
//!
//! Verifying an ECDSA or RSA signature costs tens of microseconds, and a sidecar sees the same
//! bearer token on request after request. The cache remembers, for one (token, key material,
//! algorithm constraint), whether the signature verified and the decoded header and payload.
//! Only that time-independent part is cached: `exp`, `nbf`, `iss` and `aud` are checked on every
//! call.
//!
//! The key material is identified by its `Arc<str>` allocation, which the entry keeps alive, so
//! the identity cannot be reused for other text while the entry exists; a policy's key (from
//! `data` or a literal) is the same allocation on every evaluation of a snapshot. The token is
//! compared by content. Each worker thread has its own cache (no lock on the request path),
//! bounded to [`CAPACITY`] entries and emptied when full.

use std::cell::RefCell;
use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use regorus::{Rc, Value};

use super::BuiltinResult;

/// Entries kept per thread.
pub(crate) const CAPACITY: usize = 4096;

/// `Some((header, payload))` when the signature verified, `None` when it did not.
pub(crate) type Verified = Option<(Value, Value)>;

struct Entry {
    token: Box<str>,
    key: Rc<str>,
    alg: &'static str,
    verified: Verified,
}

struct Cache {
    hasher: RandomState,
    entries: HashMap<u64, Entry>,
}

thread_local! {
    static CACHE: RefCell<Option<Cache>> = const { RefCell::new(None) };
}

fn slot(cache: &Cache, token: &str, key: &Rc<str>, alg: &str) -> u64 {
    let ptr = Rc::as_ptr(key).cast::<u8>() as usize;
    cache.hasher.hash_one((token, ptr, key.len(), alg))
}

/// The cached verification of `token` under `key` and `alg`, or `compute`'s answer, which is
/// then cached. Errors are not cached.
pub(crate) fn verified(
    token: &str,
    key: &Rc<str>,
    alg: &'static str,
    compute: impl FnOnce() -> BuiltinResult<Verified>,
) -> BuiltinResult<Verified> {
    let hit = CACHE.with(|cell| {
        let Ok(mut cell) = cell.try_borrow_mut() else {
            return None;
        };
        let cache = cell.get_or_insert_with(|| Cache {
            hasher: RandomState::new(),
            entries: HashMap::new(),
        });
        let h = slot(cache, token, key, alg);
        cache
            .entries
            .get(&h)
            .filter(|e| e.alg == alg && Rc::ptr_eq(&e.key, key) && *e.token == *token)
            .map(|e| e.verified.clone())
    });
    if let Some(v) = hit {
        return Ok(v);
    }
    let verified = compute()?;
    CACHE.with(|cell| {
        let Ok(mut cell) = cell.try_borrow_mut() else {
            return;
        };
        let Some(cache) = cell.as_mut() else {
            return;
        };
        if cache.entries.len() >= CAPACITY {
            cache.entries.clear();
        }
        let h = slot(cache, token, key, alg);
        cache.entries.insert(
            h,
            Entry {
                token: token.into(),
                key: key.clone(),
                alg,
                verified: verified.clone(),
            },
        );
    });
    Ok(verified)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn hits_need_the_same_token_key_allocation_and_alg() {
        let key: Rc<str> = "key".into();
        let calls = Cell::new(0);
        let compute = || {
            calls.set(calls.get() + 1);
            Ok(Some((Value::from(1), Value::from(2))))
        };
        let a = verified("t1", &key, "ES256", compute).unwrap();
        let b = verified("t1", &key, "ES256", compute).unwrap();
        assert_eq!(a, b);
        assert_eq!(calls.get(), 1);
        verified("t2", &key, "ES256", compute).unwrap();
        verified("t1", &key, "RS256", compute).unwrap();
        // Same text, another allocation: not trusted as the same key.
        let other: Rc<str> = "key".into();
        verified("t1", &other, "ES256", compute).unwrap();
        assert_eq!(calls.get(), 4);
    }

    #[test]
    fn errors_are_not_cached_and_size_is_bounded() {
        let key: Rc<str> = "k".into();
        let calls = Cell::new(0);
        let failing = || {
            calls.set(calls.get() + 1);
            Err(super::super::BuiltinError::new("bad"))
        };
        assert!(verified("e", &key, "ES256", failing).is_err());
        assert!(verified("e", &key, "ES256", failing).is_err());
        assert_eq!(calls.get(), 2);
        for i in 0..CAPACITY + 10 {
            verified(&format!("tok{i}"), &key, "ES256", || Ok(None)).unwrap();
        }
        let len = CACHE.with(|c| c.borrow().as_ref().map_or(0, |c| c.entries.len()));
        assert!(len <= CAPACITY, "{len}");
    }
}
