//! Secrets an authentication method needs (an OAuth client secret, webhook signing secrets):
//! only from the environment or from a file readable by its owner only, re-read when the file
//! changes. Never printed: `Debug` shows how many there are.

use std::path::Path;
use std::sync::Arc;

use super::file::WatchedFile;
use crate::env::Env;

/// One or more secrets (several while one is being rotated).
#[derive(Clone)]
pub struct Secrets(pub Vec<Vec<u8>>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} redacted)", self.0.len())
    }
}

/// Where secrets come from.
pub enum SecretSource {
    Fixed(Arc<Secrets>),
    File(WatchedFile<Secrets>),
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::Fixed(s) => write!(f, "Fixed({} redacted)", s.0.len()),
            SecretSource::File(w) => write!(f, "File({})", w.path().display()),
        }
    }
}

impl SecretSource {
    /// The secrets now (a file is re-read when it changed, at most once a second).
    pub fn get(&self) -> Arc<Secrets> {
        match self {
            SecretSource::Fixed(s) => s.clone(),
            SecretSource::File(w) => w.get(),
        }
    }

    /// Secrets from environment variables (one each) or a file (one per non-empty line), each
    /// at least `min_len` bytes. `key` names the config key in errors; values never appear.
    pub fn open(
        env: &dyn Env,
        vars: &[String],
        file: Option<&Path>,
        min_len: usize,
        key: &str,
    ) -> Result<Self, String> {
        if let Some(path) = file {
            check_mode(path).map_err(|e| format!("{key}_file: {e}"))?;
            let parse: fn(&str) -> Result<Secrets, String> = if min_len >= 16 {
                parse_lines_16
            } else {
                parse_lines_1
            };
            return WatchedFile::open(path, parse)
                .map(SecretSource::File)
                .map_err(|e| format!("{key}_file: {e}"));
        }
        let mut out = Vec::new();
        for var in vars {
            let value = env
                .get(var)
                .filter(|s| !s.trim().is_empty())
                .ok_or_else(|| {
                    format!("{key}_env: environment variable {var} is unset or empty")
                })?;
            let value = value.trim().as_bytes().to_vec();
            if value.len() < min_len {
                return Err(format!(
                    "{key}_env: the secret in {var} must have at least {min_len} bytes"
                ));
            }
            out.push(value);
        }
        if out.is_empty() {
            return Err(format!("set {key}_env or {key}_file"));
        }
        Ok(SecretSource::Fixed(Arc::new(Secrets(out))))
    }
}

fn parse_lines(text: &str, min_len: usize) -> Result<Secrets, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line.len() < min_len {
            return Err(format!(
                "line {}: a secret must have at least {min_len} bytes",
                i + 1
            ));
        }
        out.push(line.as_bytes().to_vec());
    }
    if out.is_empty() {
        return Err("no secret in the file".into());
    }
    Ok(Secrets(out))
}

fn parse_lines_16(text: &str) -> Result<Secrets, String> {
    parse_lines(text, 16)
}

fn parse_lines_1(text: &str) -> Result<Secrets, String> {
    parse_lines(text, 1)
}

/// Refuses a secret file that others can read or write.
fn check_mode(path: &Path) -> Result<(), String> {
    #[cfg(unix)]
    crate::jose::keys::check_owner_only(path, "a secret file")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_and_their_errors_never_show_a_secret() {
        let env = |k: &str| (k == "S").then(|| "0123456789abcdef-secret".to_string());
        let s = SecretSource::open(&env, &["S".into()], None, 16, "secrets").unwrap();
        assert_eq!(s.get().0.len(), 1);
        assert!(!format!("{s:?}").contains("secret\""));
        let e = SecretSource::open(&env, &["S".into()], None, 64, "secrets").unwrap_err();
        assert!(e.contains("at least 64") && !e.contains("0123"), "{e}");
        let e = SecretSource::open(&env, &["NOPE".into()], None, 1, "secrets").unwrap_err();
        assert!(e.contains("NOPE"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, "0123456789abcdef-one\n\n0123456789abcdef-two\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let e = SecretSource::open(&env, &[], Some(&path), 16, "secrets").unwrap_err();
            assert!(e.contains("owner only"), "{e}");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let s = SecretSource::open(&env, &[], Some(&path), 16, "secrets").unwrap();
        assert_eq!(s.get().0.len(), 2);
    }
}
