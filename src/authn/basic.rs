//! HTTP Basic authentication against a users file of argon2id or bcrypt hashes.
//!
//! The file's format is told by its content: a JSON object (first non-blank character `{`)
//!
//! ```json
//! {"users": [{"username": "ops", "hash": "$argon2id$v=19$m=19456,t=2,p=1$...", "roles": ["admin"]}]}
//! ```
//!
//! or else Apache `htpasswd` lines, `user:hash` (blank lines and lines starting with `#` are
//! skipped; such users have no roles or scopes). Either way a hash is argon2id (a PHC string)
//! or bcrypt (`$2a$`, `$2b$`, `$2y$`) of cost [`MIN_BCRYPT_COST`] to [`MAX_BCRYPT_COST`];
//! anything else (`htpasswd`'s MD5 `$apr1$`, `{SHA}`, `crypt(3)`, plain text) stops the load
//! with an error naming the user or the line, never showing the hash.
//!
//! - Verification runs on the blocking pool, at most [`MAX_PARALLEL`] at a time, so a flood of
//!   Basic attempts never stalls the Check runtime's workers; at most [`MAX_WAITING`] more wait
//!   for a slot, and an attempt beyond that is refused at once ([`BasicError::Busy`], 429).
//! - An unknown user is verified against a dummy hash made at load time like the costliest
//!   stored hash (of argon2id and bcrypt, whichever took longer to make), so both answers take
//!   the same time.
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

use super::config::Lockout;
use super::file::WatchedFile;
use super::limit::Slots;

/// Password verifications running at once.
pub const MAX_PARALLEL: usize = 2;
/// Attempts waiting for a verification slot at once; more are refused (429).
pub const MAX_WAITING: usize = 64;
/// Most user names whose failures are tracked.
pub const MAX_TRACKED: usize = 100_000;
/// The longest user name verified.
pub const MAX_USER_BYTES: usize = 256;
/// The least bcrypt cost accepted (2^10 rounds; lower costs are too cheap to brute-force).
pub const MIN_BCRYPT_COST: u32 = 10;
/// The highest bcrypt cost accepted (one verification already takes seconds).
pub const MAX_BCRYPT_COST: u32 = 16;

/// The verification slots shared by every `basic` method of the process.
pub(crate) fn slots() -> Slots {
    Slots::new(MAX_PARALLEL, MAX_WAITING)
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

/// What verifying a stored hash costs: the hash's own parameters.
#[derive(Debug, Clone)]
enum Cost {
    Argon2(Params),
    Bcrypt(u32),
}

/// The cost of an accepted hash, or why it is refused (never showing the hash).
fn check_hash(hash: &str) -> Result<Cost, String> {
    if hash.starts_with("$2a$") || hash.starts_with("$2b$") || hash.starts_with("$2y$") {
        let parts: bcrypt::HashParts = hash
            .parse()
            .map_err(|_| "not a well-formed bcrypt hash".to_string())?;
        let cost = parts.get_cost();
        if cost < MIN_BCRYPT_COST {
            return Err(format!(
                "bcrypt cost {cost} is below {MIN_BCRYPT_COST}; re-hash the password (htpasswd -B -C 12)"
            ));
        }
        if cost > MAX_BCRYPT_COST {
            return Err(format!("bcrypt cost {cost} is above {MAX_BCRYPT_COST}"));
        }
        return Ok(Cost::Bcrypt(cost));
    }
    if hash.starts_with("$argon2") {
        let parsed = PasswordHash::new(hash).map_err(|e| format!("not a PHC hash string: {e}"))?;
        if parsed.algorithm.as_str() != "argon2id" {
            return Err("only the argon2id variant of argon2 is accepted".into());
        }
        let params =
            Params::try_from(&parsed).map_err(|e| format!("bad argon2 parameters: {e}"))?;
        if params.m_cost() > 1024 * 1024 || params.t_cost() > 16 {
            return Err("argon2 parameters too costly".into());
        }
        return Ok(Cost::Argon2(params));
    }
    let what = if hash.starts_with("$apr1$") {
        "an Apache MD5 ($apr1$) hash"
    } else if hash.starts_with("{SHA}") {
        "a SHA-1 ({SHA}) hash"
    } else if hash.starts_with("$2x$") {
        "a legacy bcrypt ($2x$) hash"
    } else if hash.starts_with('$') {
        "a crypt(3) hash"
    } else if hash.len() == 13
        && hash
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/')
    {
        "a crypt(3) DES hash"
    } else {
        "plain text or an unknown hash"
    };
    Err(format!(
        "{what} is refused; only argon2id and bcrypt ($2a$, $2b$, $2y$) hashes are accepted (htpasswd -B)"
    ))
}

/// `user:hash` lines of an Apache `htpasswd` file.
fn parse_htpasswd(text: &str) -> Result<Vec<(User, Cost)>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let n = i + 1;
        let Some((user, hash)) = line.split_once(':').filter(|(u, _)| !u.is_empty()) else {
            return Err(format!("line {n}: expected user:hash"));
        };
        let cost = check_hash(hash).map_err(|e| format!("line {n} (user {user:?}): {e}"))?;
        let user = User {
            username: user.to_string(),
            hash: hash.to_string(),
            roles: Vec::new(),
            scopes: Vec::new(),
        };
        out.push((user, cost));
    }
    Ok(out)
}

/// The users of a JSON users file.
fn parse_json(text: &str) -> Result<Vec<(User, Cost)>, String> {
    let file: UsersFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
    file.users
        .into_iter()
        .map(|u| {
            let cost = check_hash(&u.hash).map_err(|e| format!("user {:?}: {e}", u.username))?;
            Ok((u, cost))
        })
        .collect()
}

/// Parsed users and the dummy hash for unknown names.
#[derive(Debug)]
pub struct Users {
    users: HashMap<String, User>,
    dummy: String,
}

impl Users {
    fn parse(text: &str) -> Result<Self, String> {
        let json = text.trim_start().starts_with('{');
        let entries = if json {
            parse_json(text)?
        } else if text.trim().is_empty() {
            return Err("the users file is empty".into());
        } else {
            parse_htpasswd(text)?
        };
        let mut users = HashMap::new();
        let mut argon2: Option<Params> = None;
        let mut bcrypt: Option<u32> = None;
        for (u, cost) in entries {
            match cost {
                Cost::Argon2(params) => {
                    if argon2.as_ref().is_none_or(|c| {
                        u64::from(params.m_cost()) * u64::from(params.t_cost())
                            > u64::from(c.m_cost()) * u64::from(c.t_cost())
                    }) {
                        argon2 = Some(params);
                    }
                }
                Cost::Bcrypt(c) => bcrypt = bcrypt.max(Some(c)),
            }
            if users.contains_key(&u.username) {
                return Err(format!("user {:?} is listed twice", u.username));
            }
            users.insert(u.username.clone(), u);
        }
        Ok(Self {
            users,
            dummy: dummy_hash(argon2, bcrypt)?,
        })
    }
}

/// A hash of a random password that costs as much to verify as the costliest stored one.
/// Making a hash runs the same function as verifying it, so with both kinds stored the one
/// that took longer to make is kept.
fn dummy_hash(argon2: Option<Params>, bcrypt_cost: Option<u32>) -> Result<String, String> {
    let mut pw = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut OsRng, &mut pw);
    let make_argon2 = |params: Params| {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(&pw, &SaltString::generate(&mut OsRng))
            .map(|h| h.to_string())
            .map_err(|e| e.to_string())
    };
    let make_bcrypt = |cost: u32| bcrypt::hash(pw, cost).map_err(|e| e.to_string());
    let timed = |make: &dyn Fn() -> Result<String, String>| {
        let started = Instant::now();
        make().map(|h| (h, started.elapsed()))
    };
    match (argon2, bcrypt_cost) {
        (Some(params), Some(cost)) => {
            let (a, a_took) = timed(&|| make_argon2(params.clone()))?;
            let (b, b_took) = timed(&|| make_bcrypt(cost))?;
            Ok(if b_took > a_took { b } else { a })
        }
        (None, Some(cost)) => make_bcrypt(cost),
        (argon2, None) => make_argon2(argon2.unwrap_or_default()),
    }
}

/// Whether `password` matches a hash [`check_hash`] accepted.
fn verify_hash(password: &str, hash: &str) -> bool {
    if hash.starts_with("$2") {
        return bcrypt::verify(password, hash).unwrap_or(false);
    }
    PasswordHash::new(hash).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
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
    pub(crate) fn open(
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
        let Ok(permit) = self.slots.acquire(None).await else {
            // Not a failure of this user's password: give the place back uncounted.
            attempt.abandon();
            return Err(BasicError::Busy);
        };
        let ok = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            verify_hash(&password, &hash)
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
    fn only_argon2id_of_the_argon2_variants() {
        let h = hash_password("x").unwrap();
        assert!(h.starts_with("$argon2id$"));
        let bad = h.replace("$argon2id$", "$argon2i$");
        let text = format!("{{\"users\": [{{\"username\": \"a\", \"hash\": \"{bad}\"}}]}}");
        let e = Users::parse(&text).unwrap_err();
        assert!(e.contains("\"a\"") && !e.contains(&bad), "{e}");
    }

    #[test]
    fn htpasswd_lines_are_told_apart_and_never_echoed() {
        let bcrypt = bcrypt::hash("pw", 10).unwrap();
        let users = Users::parse(&format!("# admins\n\nops:{bcrypt}\r\n")).unwrap();
        assert!(users.users.contains_key("ops"));
        assert!(users.dummy.starts_with("$2b$10$"), "{}", users.dummy);
        for (line, want) in [
            ("bob:$apr1$abc$0123456789abcdefghij", "MD5"),
            ("bob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "SHA-1"),
            ("bob:rl0ZCtCf3Wbdk", "DES"),
            ("bob:$6$salt$hash", "crypt(3)"),
            ("bob:hunter2-plain", "plain text"),
            (
                "bob:$2x$10$abcdefghijklmnopqrstuu5Ug5r8X3pB6V1T6H2dQ5a9t8oUgCk1i",
                "$2x$",
            ),
            ("nocolon-hunter2", "expected user:hash"),
        ] {
            let e = Users::parse(&format!("ops:{bcrypt}\n{line}\n")).unwrap_err();
            assert!(e.starts_with("line 2") && e.contains(want), "{line}: {e}");
            let secret = line.split_once(':').map_or(line, |(_, h)| h);
            assert!(!e.contains(secret), "the hash is echoed: {e}");
        }
        let low = bcrypt::hash("pw", 4).unwrap();
        let e = Users::parse(&format!("weak:{low}\n")).unwrap_err();
        assert!(e.contains("\"weak\"") && e.contains("cost 4"), "{e}");
        assert!(Users::parse(" \n").is_err(), "an empty file is refused");
        assert!(Users::parse(&format!("ops:{bcrypt}\nops:{bcrypt}\n")).is_err());
    }

    #[test]
    fn the_dummy_is_as_costly_as_the_costliest_hash() {
        let weak_argon2 = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(8, 1, 1, None).unwrap(),
        )
        .hash_password(b"pw", &SaltString::generate(&mut OsRng))
        .unwrap()
        .to_string();
        let bcrypt = bcrypt::hash("pw", 11).unwrap();
        let text = serde_json::json!({"users": [
            {"username": "a", "hash": weak_argon2},
            {"username": "b", "hash": bcrypt},
        ]})
        .to_string();
        let users = Users::parse(&text).unwrap();
        assert!(users.dummy.starts_with("$2b$11$"), "{}", users.dummy);
        assert!(verify_hash("pw", &users.users["a"].hash));
        assert!(verify_hash("pw", &users.users["b"].hash));
        assert!(!verify_hash("pW", &users.users["b"].hash));
    }
}
