//! HTTP Basic authentication against a users file of argon2id hashes.
//!
//! ```json
//! {"users": [{"username": "ops", "hash": "$argon2id$v=19$m=19456,t=2,p=1$...", "roles": ["admin"]}]}
//! ```
//!
//! - Verification runs on the blocking pool, at most [`MAX_PARALLEL`] at a time, so a flood of
//!   Basic attempts never stalls the Check runtime's workers; at most [`MAX_WAITING`] more wait
//!   for a slot, and an attempt beyond that is refused at once ([`BasicError::Busy`], 429).
//! - An unknown user is verified against a dummy hash made at load time with the parameters of
//!   the costliest stored hash, so both answers take the same time.
//! - Lockout: after `max_failures` consecutive failures a user name (known or not, so lockout
//!   reveals nothing either) is refused without verification for `seconds`, doubled at each
//!   further lockout up to `max_seconds`; a success resets it. An attempt *reserves* its place
//!   in that count before it waits for a verification slot, so concurrent attempts cannot
//!   overrun it: at most `max_failures` verifications are ever computed for one user name
//!   between two lockouts, however many arrive at once (the others are refused as locked).
//! - At most [`MAX_TRACKED`] user names are tracked; names that are not locked and have no
//!   attempt in flight are forgotten first, and when every tracked name is locked or busy, an
//!   attempt for a new name is refused ([`BasicError::Busy`]) rather than forgetting a lockout.
//!   User names longer than [`MAX_USER_BYTES`] are refused without verification.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine as _;
use rand_core::OsRng;
use serde::Deserialize;
use tokio::sync::Semaphore;

use super::config::Lockout;
use super::file::WatchedFile;

/// Argon2 verifications running at once.
pub const MAX_PARALLEL: usize = 2;
/// Attempts waiting for a verification slot at once; more are refused (429).
pub const MAX_WAITING: usize = 64;
/// Most user names whose failures are tracked.
pub const MAX_TRACKED: usize = 100_000;
/// The longest user name verified.
pub const MAX_USER_BYTES: usize = 256;

/// The verification slots, shared by every `basic` method of the process.
#[derive(Debug)]
pub struct Slots {
    permits: Arc<Semaphore>,
    waiting: std::sync::atomic::AtomicUsize,
}

impl Default for Slots {
    fn default() -> Self {
        Self {
            permits: Arc::new(Semaphore::new(MAX_PARALLEL)),
            waiting: std::sync::atomic::AtomicUsize::new(0),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub username: String,
    pub hash: String,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    users: Vec<User>,
}

/// Parsed users and the dummy hash for unknown names.
#[derive(Debug)]
pub struct Users {
    users: HashMap<String, User>,
    dummy: String,
}

impl Users {
    fn parse(text: &str) -> Result<Self, String> {
        let file: UsersFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let mut users = HashMap::new();
        let mut costliest: Option<Params> = None;
        for u in file.users {
            let parsed = PasswordHash::new(&u.hash)
                .map_err(|e| format!("user {:?}: not a PHC hash string: {e}", u.username))?;
            if parsed.algorithm.as_str() != "argon2id" {
                return Err(format!(
                    "user {:?}: only argon2id hashes are accepted",
                    u.username
                ));
            }
            let params = Params::try_from(&parsed)
                .map_err(|e| format!("user {:?}: bad argon2 parameters: {e}", u.username))?;
            if params.m_cost() > 1024 * 1024 || params.t_cost() > 16 {
                return Err(format!(
                    "user {:?}: argon2 parameters too costly",
                    u.username
                ));
            }
            if costliest.as_ref().is_none_or(|c| {
                u64::from(params.m_cost()) * u64::from(params.t_cost())
                    > u64::from(c.m_cost()) * u64::from(c.t_cost())
            }) {
                costliest = Some(params);
            }
            if users.insert(u.username.clone(), u).is_some() {
                return Err("a user name is listed twice".into());
            }
        }
        let params = costliest.unwrap_or_default();
        let mut pw = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut OsRng, &mut pw);
        let dummy = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(&pw, &SaltString::generate(&mut OsRng))
            .map_err(|e| e.to_string())?
            .to_string();
        Ok(Self { users, dummy })
    }
}

/// Hashes a password for the users file (argon2id, default parameters).
pub fn hash_password(password: &str) -> Result<String, String> {
    Argon2::default()
        .hash_password(password.as_bytes(), &SaltString::generate(&mut OsRng))
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

#[derive(Debug, Default, Clone, Copy)]
struct Failures {
    count: u32,
    /// Attempts reserved and not yet finished.
    in_flight: u32,
    lockouts: u32,
    locked_until: Option<Instant>,
}

impl Failures {
    fn locked(&self, now: Instant) -> bool {
        self.locked_until.is_some_and(|t| now < t)
    }
}

/// Why a Basic attempt failed (for logs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BasicError {
    #[error("malformed Basic credentials")]
    Malformed,
    #[error("wrong user name or password")]
    Wrong,
    #[error("user is locked out")]
    Locked,
    #[error("verification unavailable")]
    Unavailable,
    #[error("too many attempts waiting for verification")]
    Busy,
}

/// One `basic` method: users and lockout state.
#[derive(Debug)]
pub struct BasicAuth {
    pub realm: String,
    users: WatchedFile<Users>,
    lockout: Lockout,
    failures: Mutex<HashMap<String, Failures>>,
    slots: Arc<Slots>,
}

/// A reserved attempt: released (counted as a failure unless [`Attempt::finish`] says
/// otherwise) when dropped, so a cancelled request never leaks its reservation.
struct Attempt<'a> {
    auth: &'a BasicAuth,
    user: String,
    done: bool,
}

impl Attempt<'_> {
    fn finish(mut self, ok: bool) {
        self.done = true;
        self.auth.finish(&self.user, ok);
    }

    /// Gives the place back without counting the attempt.
    fn abandon(mut self) {
        self.done = true;
        if let Ok(mut map) = self.auth.failures.lock()
            && let Some(f) = map.get_mut(&self.user)
        {
            f.in_flight = f.in_flight.saturating_sub(1);
        }
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.auth.finish(&self.user, false);
        }
    }
}

/// A place in the queue for a verification slot.
struct Waiting<'a>(&'a Slots);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0
            .waiting
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// `(user, password)` from the value after `Basic `.
pub fn decode(credentials: &str) -> Option<(String, String)> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(credentials.trim())
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (u, p) = text.split_once(':')?;
    (!u.is_empty()).then(|| (u.to_string(), p.to_string()))
}

impl BasicAuth {
    pub fn open(
        realm: String,
        users: &Path,
        lockout: Lockout,
        slots: Arc<Slots>,
    ) -> Result<Self, String> {
        Ok(Self {
            realm,
            users: WatchedFile::open(users, Users::parse)?,
            lockout,
            failures: Mutex::new(HashMap::new()),
            slots,
        })
    }

    /// Takes a place in `user`'s failure count before any verification is awaited: refused
    /// when the user is locked, or when the failures so far plus the attempts in flight already
    /// reach `max_failures`.
    fn reserve(&self, user: &str) -> Result<Attempt<'_>, BasicError> {
        let mut map = self.failures.lock().map_err(|_| BasicError::Unavailable)?;
        let now = Instant::now();
        if !map.contains_key(user) && map.len() >= MAX_TRACKED {
            map.retain(|_, f| f.locked(now) || f.in_flight > 0);
            if map.len() >= MAX_TRACKED {
                return Err(BasicError::Busy);
            }
        }
        let f = map.entry(user.to_string()).or_default();
        if f.locked(now) {
            return Err(BasicError::Locked);
        }
        if f.count.saturating_add(f.in_flight) >= self.lockout.max_failures {
            return Err(BasicError::Locked);
        }
        f.in_flight += 1;
        Ok(Attempt {
            auth: self,
            user: user.to_string(),
            done: false,
        })
    }

    /// Ends a reserved attempt.
    fn finish(&self, user: &str, ok: bool) {
        let Ok(mut map) = self.failures.lock() else {
            return;
        };
        let Some(f) = map.get_mut(user) else {
            return;
        };
        f.in_flight = f.in_flight.saturating_sub(1);
        if ok {
            f.count = 0;
            f.lockouts = 0;
            f.locked_until = None;
            if f.in_flight == 0 {
                map.remove(user);
            }
            return;
        }
        f.count += 1;
        if f.count >= self.lockout.max_failures {
            let factor = 1u64 << f.lockouts.min(20);
            let secs = self
                .lockout
                .seconds
                .saturating_mul(factor)
                .min(self.lockout.max_seconds.max(self.lockout.seconds));
            f.locked_until = Some(Instant::now() + Duration::from_secs(secs));
            f.lockouts += 1;
            f.count = 0;
        }
    }

    /// Verifies `Basic` credentials; the user on success.
    pub async fn verify(&self, credentials: &str) -> Result<User, BasicError> {
        let (user, password) = decode(credentials).ok_or(BasicError::Malformed)?;
        if user.len() > MAX_USER_BYTES {
            return Err(BasicError::Malformed);
        }
        let attempt = self.reserve(&user)?;
        let users = self.users.get();
        let found = users.users.get(&user).cloned();
        let hash = found
            .as_ref()
            .map_or_else(|| users.dummy.clone(), |u| u.hash.clone());
        let slots = &*self.slots;
        if slots
            .waiting
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel)
            >= MAX_WAITING
        {
            slots
                .waiting
                .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            // Not a failure of this user's password: give the place back uncounted.
            attempt.abandon();
            return Err(BasicError::Busy);
        }
        let waiting = Waiting(slots);
        let permit = slots
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| BasicError::Unavailable)?;
        drop(waiting);
        let ok = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            PasswordHash::new(&hash).is_ok_and(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
        })
        .await
        .map_err(|_| BasicError::Unavailable)?;
        match found {
            Some(u) if ok => {
                attempt.finish(true);
                Ok(u)
            }
            _ => {
                attempt.finish(false);
                Err(BasicError::Wrong)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_forms() {
        let enc = base64::engine::general_purpose::STANDARD.encode("u:p:q");
        assert_eq!(decode(&enc), Some(("u".into(), "p:q".into())));
        assert_eq!(decode("!!"), None);
        let enc = base64::engine::general_purpose::STANDARD.encode(":p");
        assert_eq!(decode(&enc), None);
    }

    #[test]
    fn only_argon2id() {
        let h = hash_password("x").unwrap();
        assert!(h.starts_with("$argon2id$"));
        let bad = h.replace("$argon2id$", "$argon2i$");
        let text = format!("{{\"users\": [{{\"username\": \"a\", \"hash\": \"{bad}\"}}]}}");
        assert!(Users::parse(&text).is_err());
    }
}
