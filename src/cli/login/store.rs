//! The saved login: the gateway token `auth login` obtained, in a file readable by its owner
//! only, at `$PORTCULLIS_LOGIN_FILE`, else `$XDG_CONFIG_HOME/portcullis/token`, else
//! `$HOME/.config/portcullis/token`.
//!
//! ```json
//! {"gateway": "http://127.0.0.1:9292", "issuer": "https://accounts.example.com",
//!  "token": "<gateway JWT>", "expires_at": 1767225600}
//! ```
//!
//! The token is sent only to the gateway it came from. A file that others can read or write
//! is refused (as `ssh` refuses such a key), and never silently repaired.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cli::CliError;
use crate::env::Env;
use crate::gateway::caller::Claims;
use crate::jose::b64;

/// Names the file instead of the default location.
pub const FILE_ENV: &str = "PORTCULLIS_LOGIN_FILE";

/// The largest saved-login file read.
const MAX_BYTES: u64 = 64 * 1024;

/// One saved login. `Debug` never shows the token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedLogin {
    /// The gateway that issued the token, as `http://HOST:PORT`.
    pub gateway: String,
    /// The OpenID provider the login went through.
    pub issuer: String,
    pub token: String,
    /// Unix seconds.
    pub expires_at: i64,
}

impl std::fmt::Debug for SavedLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SavedLogin")
            .field("gateway", &self.gateway)
            .field("issuer", &self.issuer)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl SavedLogin {
    /// The token's claims as it states them (unverified: only the gateway holds its secret).
    pub fn claims(&self) -> Result<Claims, String> {
        let (_, payload, _) =
            crate::jose::jws::split(&self.token, MAX_BYTES as usize).map_err(|e| e.to_string())?;
        let bytes =
            b64::decode(payload, b64::Base64::Url).map_err(|_| "not base64url".to_string())?;
        serde_json::from_slice(&bytes).map_err(|e| format!("not gateway claims: {e}"))
    }
}

/// Where the saved login lives; `None` when neither the variables nor a home are set.
pub fn path(env: &dyn Env) -> Option<PathBuf> {
    let given = |k: &str| env.get(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(p) = given(FILE_ENV) {
        return Some(p);
    }
    // The XDG spec ignores a relative XDG_CONFIG_HOME.
    let config = given("XDG_CONFIG_HOME")
        .filter(|p| p.is_absolute())
        .or_else(|| given("HOME").map(|h| h.join(".config")))?;
    Some(config.join("portcullis").join("token"))
}

/// The saved login at `path`; `None` when there is no file.
pub fn load(path: &Path) -> Result<Option<SavedLogin>, CliError> {
    let fail = |m: String| {
        CliError::Failed(format!(
            "saved login {}: {m} (remove it with `portcullis auth logout`)",
            path.display()
        ))
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(fail(e.to_string())),
    };
    crate::jose::keys::check_owner_only(path, "a saved login")
        .map_err(|e| CliError::Failed(format!("{e}; `portcullis auth logout` removes it")))?;
    let mut text = Vec::new();
    file.take(MAX_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(|e| fail(e.to_string()))?;
    if text.len() as u64 > MAX_BYTES {
        return Err(fail(format!("larger than {MAX_BYTES} bytes")));
    }
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| fail(format!("not a saved login: {e}")))
}

/// Writes `login` to `path` (mode 0600, atomically), creating its directory (mode 0700).
pub fn save(path: &Path, login: &SavedLogin) -> Result<(), CliError> {
    let fail = |e: std::io::Error| CliError::Failed(format!("{}: {e}", path.display()));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(fail)?;
    }
    let text = serde_json::to_vec(login).map_err(|e| CliError::Failed(e.to_string()))?;
    crate::authn::api_key::write_atomically(path, &text).map_err(fail)
}

/// Removes the saved login; `false` when there was none.
pub fn remove(path: &Path) -> Result<bool, CliError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(CliError::Failed(format!("{}: {e}", path.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn locations() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            path(&env(&[(FILE_ENV, "/x/t"), ("HOME", "/h")])),
            Some(PathBuf::from("/x/t"))
        );
        assert_eq!(
            path(&env(&[("XDG_CONFIG_HOME", "/c"), ("HOME", "/h")])),
            Some(PathBuf::from("/c/portcullis/token"))
        );
        assert_eq!(
            path(&env(&[("XDG_CONFIG_HOME", "rel"), ("HOME", "/h")])),
            Some(PathBuf::from("/h/.config/portcullis/token"))
        );
        assert_eq!(path(&env(&[])), None);
    }

    #[test]
    fn saved_owner_only_and_refused_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("new").join("token");
        assert_eq!(load(&p).unwrap(), None);
        let login = SavedLogin {
            gateway: "http://127.0.0.1:1".into(),
            issuer: "https://i".into(),
            token: "a.b.c".into(),
            expires_at: 5,
        };
        save(&p, &login).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&p), 0o600);
        assert_eq!(mode(p.parent().unwrap()), 0o700);
        assert_eq!(load(&p).unwrap(), Some(login.clone()));
        assert!(!format!("{login:?}").contains("a.b.c"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load(&p).is_err());
        assert!(remove(&p).unwrap());
        assert!(!remove(&p).unwrap());
        std::fs::write(&p, "{not json").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(load(&p).unwrap_err().to_string().contains("auth logout"));
    }
}
