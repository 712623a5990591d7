//! Token revocation (`authentication.revocation`): a deny-list of token ids (`jti`) and of
//! subjects ("every token of S issued at or before T"), consulted every time a token is
//! accepted — on the Check path (`jwt` policies and trusted OIDC issuers, after the
//! verified-token cache), by the gateway (its JWTs, the ID tokens of `ExchangeOidcToken`) and by
//! the internal-token minter (never a revoked token from its cache, no token for a subject
//! whose revocation lies in the future) — kept in an owner-only JSON file that several
//! replicas may share.
//!
//! # The file
//!
//! ```json
//! {"revocations": [
//!   {"jti": "9b2c…", "expires_at": 1767225600, "revoked_at": 1767220000, "revoked_by": "root"},
//!   {"subject": "alice", "issued_before": 1767220000, "expires_at": 1767306400,
//!    "revoked_at": 1767220000, "revoked_by": "root"}
//! ]}
//! ```
//!
//! - A `jti` entry refuses every token with that `jti` until `expires_at` (the token's `exp`).
//! - A `subject` entry refuses every token of that subject whose `iat` is at or before
//!   `issued_before` (a token without `iat` counts as issued before) until `expires_at`
//!   (default `issued_before` + `subject_ttl_seconds`). While `issued_before` lies ahead, no
//!   new token is issued to the subject. Revoking a subject again keeps one entry, with the
//!   later `issued_before` and the later `expires_at`.
//! - An entry applies until [`GRACE`] seconds past `expires_at` (the largest clock skew a
//!   verifier accepts), and is pruned at the next write after that.
//!
//! # Writing and sharing
//!
//! A revocation takes an exclusive lock on `<file>.lock` (and this process' own mutex), re-reads
//! the file, prunes it, adds the entry and writes the whole list atomically (a temporary file,
//! fsync, rename): replicas sharing the file never lose each other's entries, and a file that
//! does not parse is never overwritten. Every process re-reads the file when it changes (checked
//! at most once per second), so a revocation holds at once on the process that made it, within
//! a second on the others, and across restarts.
//!
//! # Bounds
//!
//! At most `max_entries` entries (a full list refuses new ones until some expire); the file at
//! most `max_entries` × [`ENTRY_BYTES`]; a `jti` or subject at most [`MAX_ID_BYTES`] bytes,
//! never empty, without control characters (any other character is JSON-escaped as needed);
//! `expires_at` at most [`MAX_LIFETIME`] seconds ahead.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use super::api_key::write_atomically;
use super::file::{WatchedFile, read_bounded};
use super::identity::Identity;
use crate::invalid::Invalid;

/// Seconds an entry still applies after its `expires_at`: the largest `clock_skew_seconds`.
pub const GRACE: i64 = 600;
/// The longest `jti` or subject.
pub const MAX_ID_BYTES: usize = 512;
/// The longest `revoked_by` kept (longer names are cut).
const MAX_BY_BYTES: usize = 256;
/// File bytes allowed per entry (an entry of the longest values, escaped, takes less).
pub const ENTRY_BYTES: u64 = 2048;
/// How far ahead an entry may expire.
pub const MAX_LIFETIME: i64 = 366 * 86_400;
/// The largest `max_entries`.
const MAX_ENTRIES_LIMIT: usize = 100_000;

/// `authentication.revocation`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationConfig {
    /// The list (JSON, owner-only); created empty when absent.
    pub file: PathBuf,
    /// Most entries kept.
    #[serde(default = "default_max_entries")]
    pub max_entries: usize,
    /// How long a subject entry lasts after its `issued_before` when the revocation names no
    /// `expires_at`: at least the longest lifetime of the subject's tokens.
    #[serde(default = "default_subject_ttl")]
    pub subject_ttl_seconds: u64,
}

fn default_max_entries() -> usize {
    10_000
}
fn default_subject_ttl() -> u64 {
    86_400
}

impl RevocationConfig {
    /// Static checks; the key is below `revocation`.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.file.as_os_str().is_empty() {
            return Err(Invalid::new("file", "must not be empty"));
        }
        if !(1..=MAX_ENTRIES_LIMIT).contains(&self.max_entries) {
            return Err(Invalid::new(
                "max_entries",
                format!("must be between 1 and {MAX_ENTRIES_LIMIT}"),
            ));
        }
        if !(1..=MAX_LIFETIME.unsigned_abs()).contains(&self.subject_ttl_seconds) {
            return Err(Invalid::new(
                "subject_ttl_seconds",
                format!("must be between 1 and {MAX_LIFETIME} (366 days)"),
            ));
        }
        Ok(())
    }

    fn max_bytes(&self) -> u64 {
        (self.max_entries as u64).saturating_mul(ENTRY_BYTES) + 64
    }
}

/// One entry: a `jti`, or a subject with `issued_before`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Subject entries: tokens with an `iat` at or before this are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_before: Option<i64>,
    /// Seconds since the epoch.
    pub expires_at: i64,
    #[serde(default)]
    pub revoked_at: i64,
    /// Who revoked (the gateway caller's subject).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub revoked_by: String,
}

impl Revocation {
    fn validate(&self) -> Result<(), String> {
        match (&self.jti, &self.subject) {
            (Some(jti), None) => {
                check_id("jti", jti)?;
                if self.issued_before.is_some() {
                    return Err("issued_before belongs to a subject entry".into());
                }
            }
            (None, Some(subject)) => {
                check_id("subject", subject)?;
                if self.issued_before.is_none() {
                    return Err("a subject entry needs issued_before".into());
                }
            }
            _ => return Err("an entry names exactly one of jti and subject".into()),
        }
        if self.revoked_by.len() > MAX_BY_BYTES || self.revoked_by.chars().any(char::is_control) {
            return Err(format!(
                "revoked_by: at most {MAX_BY_BYTES} bytes, no control characters"
            ));
        }
        Ok(())
    }
}

/// A `jti` or subject: not empty, at most [`MAX_ID_BYTES`], no control characters.
fn check_id(what: &str, v: &str) -> Result<(), String> {
    if v.is_empty() {
        Err(format!("{what} must not be empty"))
    } else if v.len() > MAX_ID_BYTES {
        Err(format!("{what} is longer than {MAX_ID_BYTES} bytes"))
    } else if v.chars().any(char::is_control) {
        Err(format!("{what} contains control characters"))
    } else {
        Ok(())
    }
}

/// `name` made fit for `revoked_by`: control characters replaced, cut at [`MAX_BY_BYTES`].
fn label(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars().map(|c| if c.is_control() { '?' } else { c }) {
        if out.len() + c.len_utf8() > MAX_BY_BYTES {
            break;
        }
        out.push(c);
    }
    out
}

/// Whether an entry expiring at `expires_at` still applies at `now`.
fn applies(expires_at: i64, now: i64) -> bool {
    now < expires_at.saturating_add(GRACE)
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListFile {
    #[serde(default)]
    revocations: Vec<Revocation>,
}

/// The parsed list: its entries (one per `jti`, one per subject) and their indexes.
#[derive(Debug, Default)]
struct List {
    entries: Vec<Revocation>,
    jtis: HashMap<String, usize>,
    subjects: HashMap<String, usize>,
}

impl List {
    fn parse(text: &str) -> Result<Self, String> {
        let file: ListFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
        for (i, e) in file.revocations.iter().enumerate() {
            e.validate().map_err(|m| format!("revocations[{i}]: {m}"))?;
        }
        Ok(Self::from_entries(file.revocations))
    }

    /// Merges entries of the same `jti` (the later `expires_at`) and of the same subject (the
    /// later `issued_before` and `expires_at`): merging only ever refuses more.
    fn from_entries(entries: Vec<Revocation>) -> Self {
        let mut list = Self::default();
        for e in entries {
            let (index, key) = match (&e.jti, &e.subject) {
                (Some(j), _) => (&mut list.jtis, j.clone()),
                (None, Some(s)) => (&mut list.subjects, s.clone()),
                (None, None) => continue,
            };
            match index.get(&key) {
                Some(&i) => {
                    let kept = &mut list.entries[i];
                    kept.expires_at = kept.expires_at.max(e.expires_at);
                    kept.issued_before = kept.issued_before.max(e.issued_before);
                    if e.revoked_at >= kept.revoked_at {
                        kept.revoked_at = e.revoked_at;
                        kept.revoked_by = e.revoked_by;
                    }
                }
                None => {
                    index.insert(key, list.entries.len());
                    list.entries.push(e);
                }
            }
        }
        list
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn jti(&self, jti: &str) -> Option<&Revocation> {
        self.jtis.get(jti).map(|&i| &self.entries[i])
    }

    fn subject(&self, subject: &str) -> Option<&Revocation> {
        self.subjects.get(subject).map(|&i| &self.entries[i])
    }

    /// Whether `token` is refused at `now`.
    fn refuses(&self, token: &Presented<'_>, now: i64) -> bool {
        let by_jti = token
            .jti
            .and_then(|j| self.jti(j))
            .is_some_and(|e| applies(e.expires_at, now));
        by_jti
            || self.subject(token.subject).is_some_and(|e| {
                applies(e.expires_at, now)
                    && token
                        .issued_at
                        .is_none_or(|iat| e.issued_before.is_some_and(|before| iat <= before))
            })
    }

    /// Whether a token issued to `subject` at `now` would be refused.
    fn refuses_new(&self, subject: &str, now: i64) -> bool {
        self.refuses(
            &Presented {
                jti: None,
                subject,
                issued_at: Some(now),
            },
            now,
        )
    }
}

/// What revocation looks at in a token that verified.
#[derive(Debug, Clone, Copy)]
pub struct Presented<'a> {
    pub jti: Option<&'a str>,
    pub subject: &'a str,
    /// `iat`; `None` when the token has none.
    pub issued_at: Option<i64>,
}

impl<'a> Presented<'a> {
    /// From verified JWT claims and the subject they stand for.
    pub fn from_claims(claims: &'a Map<String, Json>, subject: &'a str) -> Self {
        Self {
            jti: claims.get("jti").and_then(Json::as_str),
            subject,
            issued_at: claims
                .get("iat")
                .and_then(|v| crate::jose::claims::number(v, "iat").ok()),
        }
    }

    /// From an identity a JWT established.
    pub fn from_identity(id: &'a Identity) -> Self {
        Self::from_claims(&id.claims, &id.subject)
    }
}

/// What to revoke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewRevocation {
    /// A token id, kept until the token's `exp`.
    Jti { jti: String, expires_at: i64 },
    /// Every token of `subject` issued at or before `issued_before` (default: now), kept until
    /// `expires_at` (default: `issued_before` + `subject_ttl_seconds`).
    Subject {
        subject: String,
        issued_before: Option<i64>,
        expires_at: Option<i64>,
    },
}

/// Why a revocation was not recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevocationError {
    /// A malformed request (the message says which field).
    #[error("{0}")]
    Invalid(String),
    #[error(
        "the revocation list is full ({0} entries that have not expired): raise \
         authentication.revocation.max_entries or wait for entries to expire"
    )]
    Full(usize),
    /// The file could not be read, locked or written (the message names it).
    #[error("{0}")]
    File(String),
}

/// The revocation list of one process, following its file.
pub struct Revocations {
    file: WatchedFile<List>,
    lock: PathBuf,
    write: Mutex<()>,
    max_entries: usize,
    max_bytes: u64,
    subject_ttl: i64,
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocations")
            .field("file", &self.file.path())
            .finish_non_exhaustive()
    }
}

/// An exclusive lock on `path` (created owner-only), held until dropped.
fn lock(path: &Path) -> Result<std::fs::File, String> {
    super::file::lock_exclusive(path).map_err(|e| format!("{}: {e}", path.display()))
}

impl Revocations {
    /// Opens the list, creating an empty file when there is none. An error (a file that does
    /// not parse, is larger than its bound, has more than `max_entries` entries, or that others
    /// may read) names the file.
    pub fn open(config: &RevocationConfig) -> Result<Self, String> {
        let path = &config.file;
        let mut name = path.as_os_str().to_owned();
        name.push(".lock");
        let lock_path = PathBuf::from(name);
        if matches!(std::fs::symlink_metadata(path), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
        {
            let _held = lock(&lock_path)?;
            if !path.exists() {
                write_atomically(path, b"{\"revocations\": []}\n")
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                tracing::info!(file = %path.display(), "revocation list created");
            }
        }
        crate::jose::keys::check_owner_only(path, "the revocation file")?;
        let max_bytes = config.max_bytes();
        let file = WatchedFile::open_bounded(path, max_bytes, List::parse)?;
        let n = file.get().len();
        if n > config.max_entries {
            return Err(format!(
                "{}: {n} entries, more than max_entries ({})",
                path.display(),
                config.max_entries
            ));
        }
        Ok(Self {
            file,
            lock: lock_path,
            write: Mutex::new(()),
            max_entries: config.max_entries,
            max_bytes,
            subject_ttl: i64::try_from(config.subject_ttl_seconds).unwrap_or(MAX_LIFETIME),
        })
    }

    /// Whether `token` is revoked at `now`.
    pub fn refuses(&self, token: &Presented<'_>, now: i64) -> bool {
        self.file.get().refuses(token, now)
    }

    /// Whether a token issued to `subject` now would be refused: no token is issued then.
    pub fn refuses_new(&self, subject: &str, now: i64) -> bool {
        self.file.get().refuses_new(subject, now)
    }

    /// The entries that still apply.
    pub fn list(&self, now: i64) -> Vec<Revocation> {
        self.file
            .get()
            .entries
            .iter()
            .filter(|e| applies(e.expires_at, now))
            .cloned()
            .collect()
    }

    /// Records a revocation by `by` (see the module docs); the entry as stored (merged with an
    /// earlier one of the same `jti` or subject).
    pub fn revoke(
        &self,
        new: NewRevocation,
        by: &str,
        now: i64,
    ) -> Result<Revocation, RevocationError> {
        let entry = self.entry(new, by, now)?;
        let path = self.file.path();
        let file_error = |e: String| RevocationError::File(format!("{}: {e}", path.display()));
        let _local = self
            .write
            .lock()
            .map_err(|_| RevocationError::File("revocation lock poisoned".into()))?;
        let _held = lock(&self.lock).map_err(RevocationError::File)?;
        let current = read_bounded(path, self.max_bytes)
            .and_then(|text| List::parse(&text))
            .map_err(|e| file_error(format!("{e} (left as it is)")))?;
        let mut entries: Vec<Revocation> = current
            .entries
            .into_iter()
            .filter(|e| applies(e.expires_at, now))
            .collect();
        entries.push(entry.clone());
        let list = List::from_entries(entries);
        if list.len() > self.max_entries {
            return Err(RevocationError::Full(self.max_entries));
        }
        let stored = match (&entry.jti, &entry.subject) {
            (Some(j), _) => list.jti(j),
            (None, Some(s)) => list.subject(s),
            (None, None) => None,
        }
        .cloned()
        .unwrap_or(entry);
        let text = serde_json::to_vec_pretty(&ListFile {
            revocations: list.entries.clone(),
        })
        .map_err(|e| file_error(e.to_string()))?;
        write_atomically(path, &text).map_err(|e| file_error(e.to_string()))?;
        self.file.set(list);
        Ok(stored)
    }

    /// The entry `new` asks for, with its defaults, or why it is malformed.
    fn entry(&self, new: NewRevocation, by: &str, now: i64) -> Result<Revocation, RevocationError> {
        let invalid = |m: &str| Err(RevocationError::Invalid(m.to_string()));
        let latest = now.saturating_add(MAX_LIFETIME);
        let entry = match new {
            NewRevocation::Jti { jti, expires_at } => {
                if expires_at <= 0 {
                    return invalid("expires_at: the token's exp is required");
                }
                Revocation {
                    jti: Some(jti),
                    subject: None,
                    issued_before: None,
                    expires_at,
                    revoked_at: now,
                    revoked_by: label(by),
                }
            }
            NewRevocation::Subject {
                subject,
                issued_before,
                expires_at,
            } => {
                let before = issued_before.unwrap_or(now);
                if before <= 0 || before > latest {
                    return invalid(
                        "issued_before: seconds since the epoch, at most 366 days ahead",
                    );
                }
                let expires_at = expires_at.unwrap_or(before.saturating_add(self.subject_ttl));
                if expires_at < before {
                    return invalid("expires_at must not be before issued_before");
                }
                Revocation {
                    jti: None,
                    subject: Some(subject),
                    issued_before: Some(before),
                    expires_at,
                    revoked_at: now,
                    revoked_by: label(by),
                }
            }
        };
        entry.validate().map_err(RevocationError::Invalid)?;
        if !applies(entry.expires_at, now) {
            return invalid("expires_at has passed: a token that expired needs no revocation");
        }
        if entry.expires_at > latest {
            return invalid("expires_at is more than 366 days ahead");
        }
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path, max: usize) -> RevocationConfig {
        RevocationConfig {
            file: dir.join("revoked.json"),
            max_entries: max,
            subject_ttl_seconds: 100,
        }
    }

    fn jti(j: &str, exp: i64) -> NewRevocation {
        NewRevocation::Jti {
            jti: j.into(),
            expires_at: exp,
        }
    }

    fn token<'a>(jti: Option<&'a str>, subject: &'a str, iat: Option<i64>) -> Presented<'a> {
        Presented {
            jti,
            subject,
            issued_at: iat,
        }
    }

    #[test]
    fn jti_and_subject_entries_refuse_what_they_name_until_they_expire() {
        let dir = tempfile::tempdir().unwrap();
        let r = Revocations::open(&config(dir.path(), 10)).unwrap();
        r.revoke(jti("a", 2000), "root", 1000).unwrap();
        assert!(r.refuses(&token(Some("a"), "x", Some(900)), 1000));
        assert!(!r.refuses(&token(Some("b"), "x", Some(900)), 1000));
        // Until GRACE past expires_at.
        assert!(r.refuses(&token(Some("a"), "x", Some(900)), 2000 + GRACE - 1));
        assert!(!r.refuses(&token(Some("a"), "x", Some(900)), 2000 + GRACE));

        r.revoke(
            NewRevocation::Subject {
                subject: "alice".into(),
                issued_before: Some(1500),
                expires_at: None,
            },
            "root",
            1000,
        )
        .unwrap();
        assert!(r.refuses(&token(None, "alice", Some(1500)), 1000));
        assert!(r.refuses(&token(None, "alice", None), 1000));
        assert!(!r.refuses(&token(None, "alice", Some(1501)), 1000));
        assert!(!r.refuses(&token(None, "bob", Some(1)), 1000));
        // No new token while issued_before lies ahead; the default expiry is before + ttl.
        assert!(r.refuses_new("alice", 1500));
        assert!(!r.refuses_new("alice", 1501));
        assert!(!r.refuses(&token(None, "alice", Some(1)), 1600 + GRACE));
    }

    #[test]
    fn writes_prune_merge_and_stop_when_full() {
        let dir = tempfile::tempdir().unwrap();
        let r = Revocations::open(&config(dir.path(), 2)).unwrap();
        r.revoke(jti("old", 1000), "root", 900).unwrap();
        r.revoke(jti("a", 5000), "root", 900).unwrap();
        assert_eq!(
            r.revoke(jti("b", 5000), "root", 900),
            Err(RevocationError::Full(2))
        );
        // The same jti again is merged, not added.
        let merged = r.revoke(jti("a", 6000), "root", 900).unwrap();
        assert_eq!(merged.expires_at, 6000);
        // Once "old" is past its grace, the next write prunes it.
        r.revoke(jti("b", 5000), "root", 1000 + GRACE).unwrap();
        let left: Vec<_> = r
            .list(1000 + GRACE)
            .into_iter()
            .filter_map(|e| e.jti)
            .collect();
        assert_eq!(left, ["a", "b"]);
        let text = std::fs::read_to_string(dir.path().join("revoked.json")).unwrap();
        assert!(!text.contains("\"old\""), "{text}");
    }

    #[test]
    fn malformed_revocations_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let r = Revocations::open(&config(dir.path(), 10)).unwrap();
        for (bad, why) in [
            (jti("", 2000), "empty"),
            (jti(&"x".repeat(MAX_ID_BYTES + 1), 2000), "longer"),
            (jti("a\nb", 2000), "control"),
            (jti("a", 0), "required"),
            (jti("a", 1000 - GRACE), "passed"),
            (jti("a", 1000 + MAX_LIFETIME + 1), "366"),
            (
                NewRevocation::Subject {
                    subject: "s".into(),
                    issued_before: Some(900),
                    expires_at: Some(800),
                },
                "before issued_before",
            ),
        ] {
            match r.revoke(bad, "root", 1000) {
                Err(RevocationError::Invalid(m)) => assert!(m.contains(why), "{m}"),
                other => panic!("{other:?}"),
            }
        }
        assert!(r.list(1000).is_empty());
    }

    #[test]
    fn odd_characters_survive_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path(), 10);
        let odd = "quote\" back\\slash ünïcode 🎫 </script> ,]}";
        Revocations::open(&c)
            .unwrap()
            .revoke(jti(odd, 5000), "caller\u{1b}[31m", 1000)
            .unwrap();
        let again = Revocations::open(&c).unwrap();
        assert!(again.refuses(&token(Some(odd), "x", None), 1000));
        assert_eq!(again.list(1000)[0].revoked_by, "caller?[31m");
    }

    #[test]
    fn open_refuses_bad_files() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path(), 2);
        let write = |text: &str, mode: u32| {
            std::fs::write(&c.file, text).unwrap();
            std::fs::set_permissions(&c.file, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        let err = |text: &str, mode: u32| {
            write(text, mode);
            Revocations::open(&c).unwrap_err()
        };
        assert!(err("not json", 0o600).contains("revoked.json"));
        assert!(err(r#"{"revocations": [{"expires_at": 1}]}"#, 0o600).contains("exactly one"));
        assert!(err(r#"{"revocations": [], "x": 1}"#, 0o600).contains("unknown field"));
        let three = r#"{"revocations": [{"jti": "a", "expires_at": 9}, {"jti": "b", "expires_at": 9},
            {"jti": "c", "expires_at": 9}]}"#;
        assert!(err(three, 0o600).contains("more than max_entries"));
        assert!(err(&" ".repeat(5000), 0o600).contains("larger than"));
        assert!(err(r#"{"revocations": []}"#, 0o644).contains("owner only"));
    }
}
