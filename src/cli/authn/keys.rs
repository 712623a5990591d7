//! `authn validate-key`, `authn hash-key`, `authn hash-password`: API keys and Basic users
//! file entries, offline. Hashes are made by the functions the stores verify with
//! ([`NewApiKey`], [`crate::authn::basic::hash_password`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use super::{ConfigArgs, OutputArgs, policy, printable};
use crate::authn::api_key::{ApiKeyStore, NewApiKey};
use crate::authn::config::Method;
use crate::cli::CliError;
use crate::cli::output::{self, Format};
use crate::cli::secret;
use crate::client::parse_duration;

/// Flags of `authn validate-key`.
#[derive(Clone, clap::Args)]
pub struct ValidateKeyArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// The policy whose `api_key.store` is read.
    #[arg(long)]
    pub policy: String,
    /// The API key (visible to `ps` and kept in the shell's history: prefer --key-file).
    #[arg(
        long,
        required_unless_present = "key_file",
        conflicts_with = "key_file"
    )]
    pub key: Option<String>,
    /// A file holding the API key (`-`: standard input).
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    #[command(flatten)]
    pub output: OutputArgs,
}

impl std::fmt::Debug for ValidateKeyArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValidateKeyArgs")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// `authn validate-key`.
pub fn validate_key(a: &ValidateKeyArgs) -> Result<(), CliError> {
    let key = secret::either(a.key.as_deref(), a.key_file.as_deref(), "--key", false)?
        .ok_or_else(|| CliError::Usage("give --key or --key-file".into()))?;
    let auth = a.config.authentication()?;
    let p = policy(&auth, &a.policy)?;
    let config = p
        .api_key
        .as_ref()
        .ok_or_else(|| CliError::Usage(format!("policy {:?} has no api_key block", p.name)))?;
    if !p.methods.contains(&Method::ApiKey) {
        eprintln!(
            "note: policy {:?} does not list api_key in its methods: Checks never read its keys",
            p.name
        );
    }
    let store = ApiKeyStore::open(&config.store)
        .map_err(|e| CliError::Failed(format!("api_key.store {}: {e}", config.store.display())))?;
    let prefixes = &config.prefix.0;
    let verdict = if !prefixes.is_empty() && !prefixes.iter().any(|x| key.starts_with(x.as_str())) {
        Err(format!(
            "key does not have an accepted prefix ({})",
            prefixes.join(", ")
        ))
    } else {
        store
            .authenticate(&key, crate::jose::clock::now())
            .map_err(|e| e.to_string())
    };
    let format = a.output.format();
    match verdict {
        Ok(r) => match format {
            Format::Json => output::json_line(&json!({
                "valid": true, "policy": p.name, "id": r.id, "subject": r.subject,
                "scopes": r.scopes, "roles": r.roles, "expires_at": r.expires_at,
            })),
            Format::Table => output::text(&output::pairs(&[
                ("valid", "yes".into()),
                ("id", printable(&r.id)),
                ("subject", printable(&r.subject)),
                ("scopes", printable(&r.scopes.join(" "))),
                ("roles", printable(&r.roles.join(" "))),
                (
                    "expires_at",
                    r.expires_at.map_or("never".into(), |e| e.to_string()),
                ),
            ])),
        },
        Err(reason) => {
            match format {
                Format::Json => {
                    output::json_line(&json!({"valid": false, "policy": p.name, "reason": reason}))?
                }
                Format::Table => output::text(&format!("invalid: {}", printable(&reason)))?,
            }
            Err(CliError::Denied)
        }
    }
}

/// Flags of `authn hash-key`.
#[derive(Debug, Clone, clap::Args)]
pub struct HashKeyArgs {
    /// The key's subject (`input.identity.subject`).
    #[arg(long)]
    pub subject: String,
    /// A scope the key carries (repeatable).
    #[arg(long = "scope")]
    pub scopes: Vec<String>,
    /// A role the key carries (repeatable).
    #[arg(long = "role")]
    pub roles: Vec<String>,
    /// The new key's prefix (the policy's `api_key.prefix`, e.g. sk_live_).
    #[arg(long, default_value = "", conflicts_with = "stdin")]
    pub prefix: String,
    /// Lifetime, e.g. 720h; without it the key never expires.
    #[arg(long, value_parser = parse_duration)]
    pub ttl: Option<Duration>,
    /// Hash the key read from standard input instead of making a new one.
    #[arg(long)]
    pub stdin: bool,
}

/// `authn hash-key`: prints `{"secret", "entry"}` (`secret` only for a new key).
pub fn hash_key(a: &HashKeyArgs) -> Result<(), CliError> {
    if a.subject.trim().is_empty() {
        return Err(CliError::Usage("--subject must not be empty".into()));
    }
    let expires_at = match a.ttl {
        Some(t) if t.is_zero() => return Err(CliError::Usage("--ttl must be more than 0".into())),
        Some(t) => Some(
            crate::jose::clock::now()
                .saturating_add(i64::try_from(t.as_secs()).unwrap_or(i64::MAX)),
        ),
        None => None,
    };
    let new = NewApiKey {
        subject: a.subject.clone(),
        scopes: a.scopes.clone(),
        roles: a.roles.clone(),
        expires_at,
        prefix: a.prefix.clone(),
    };
    if a.stdin {
        let key = secret::from_file(Path::new("-"), "standard input", false)?;
        let entry = new.record(&key).map_err(CliError::Usage)?;
        output::json_line(&json!({"entry": entry}))
    } else {
        let created = new.generate().map_err(CliError::Usage)?;
        output::json_line(&json!({"secret": created.secret, "entry": created.record}))
    }
}

/// Flags of `authn hash-password`. The password is never a flag.
#[derive(Debug, Clone, clap::Args)]
pub struct HashPasswordArgs {
    /// The user name of the entry.
    #[arg(long)]
    pub username: String,
    /// A role of the user (repeatable).
    #[arg(long = "role")]
    pub roles: Vec<String>,
    /// A scope of the user (repeatable).
    #[arg(long = "scope")]
    pub scopes: Vec<String>,
}

/// `authn hash-password`: prints a users-file entry with an argon2id hash.
pub fn hash_password(a: &HashPasswordArgs) -> Result<(), CliError> {
    if a.username.is_empty() || a.username.contains(':') {
        return Err(CliError::Usage(
            "--username must be non-empty and without ':' (Basic credentials split there)".into(),
        ));
    }
    let password = secret::read_stdin_or_prompt("password: ", true)?;
    let hash = crate::authn::basic::hash_password(&password).map_err(CliError::Failed)?;
    output::json_line(&json!({
        "username": a.username, "hash": hash, "roles": a.roles, "scopes": a.scopes,
    }))
}
