//! `portcullis authn …`: offline tools for the authentication layer, reading the same config
//! file as `portcullis run` through the same loader and builder (no second implementation).
//!
//! - [`test`](mod@test) `authn test`: one request through the real authentication cascade
//! - [`failures`] `authn failures`: the newest `authn_failure` events of an audit log
//! - [`keys`] `authn validate-key`, `authn hash-key`, `authn hash-password`
//!
//! Exit codes: 0 success (authenticated, a valid key), 1 refused or failed, 2 usage.

use std::path::PathBuf;

use super::CliError;
use super::output::Format;
use crate::authn::config::{AuthPolicy, Authentication};
use crate::config::Config;

pub mod failures;
pub mod keys;
pub mod test;

/// `portcullis authn`.
#[derive(Debug, clap::Subcommand)]
pub enum AuthnCommand {
    /// Run one request through the authentication cascade and print `input.identity`, or the
    /// refusal with its internal reason (exit 0 only when authenticated).
    Test(Box<test::TestArgs>),
    /// List the newest authentication failures of an audit log (JSON lines).
    Failures(failures::FailuresArgs),
    /// Check an API key against a policy's key store.
    ValidateKey(keys::ValidateKeyArgs),
    /// Make a new API key (or hash one read from standard input) and print its store entry.
    HashKey(keys::HashKeyArgs),
    /// Hash a password (read from standard input or a prompt) for a Basic users file.
    HashPassword(keys::HashPasswordArgs),
}

/// Runs an `authn` command.
pub async fn authn(cmd: AuthnCommand) -> Result<(), CliError> {
    match cmd {
        AuthnCommand::Test(a) => test::run(*a).await,
        AuthnCommand::Failures(a) => failures::run(&a),
        AuthnCommand::ValidateKey(a) => keys::validate_key(&a),
        AuthnCommand::HashKey(a) => keys::hash_key(&a),
        AuthnCommand::HashPassword(a) => keys::hash_password(&a),
    }
}

/// The config file, as `portcullis run` takes it.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArgs {
    /// Config file (YAML), the one `portcullis run --config-file` reads.
    #[arg(
        short = 'c',
        long = "config",
        alias = "config-file",
        value_name = "FILE"
    )]
    pub config: PathBuf,
    /// Override a config key, as `run --set` does.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

impl ConfigArgs {
    /// The `authentication:` section, loaded and validated as `run` does.
    pub fn authentication(&self) -> Result<Authentication, CliError> {
        let config = Config::load(Some(&self.config), &self.set)
            .map_err(|e| CliError::Failed(format!("config: {e}")))?;
        config.authentication.ok_or_else(|| {
            CliError::Failed(format!(
                "config: {}: no authentication section",
                self.config.display()
            ))
        })
    }
}

/// The policy named `name`, or a usage error listing the names there are.
fn policy<'a>(auth: &'a Authentication, name: &str) -> Result<&'a AuthPolicy, CliError> {
    auth.policies
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| {
            let names: Vec<&str> = auth.policies.iter().map(|p| p.name.as_str()).collect();
            CliError::Usage(format!(
                "no authentication policy named {name:?} (there are: {})",
                names.join(", ")
            ))
        })
}

/// `--output`, shared by the `authn` commands.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct OutputArgs {
    /// Output format: json, or table (also `text`) [default: json when stdout is not a
    /// terminal, else table].
    #[arg(long, short = 'o', value_enum)]
    pub output: Option<Format>,
}

impl OutputArgs {
    fn format(&self) -> Format {
        Format::resolve(self.output)
    }
}

/// `text` with control characters (terminal escapes) shown as `\u{..}`, for table output of
/// values a caller chose (subjects, reasons).
pub(crate) fn printable(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_unicode().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn printable_escapes_terminal_controls() {
        assert_eq!(super::printable("a\u{1b}[31mb\n"), "a\\u{1b}[31mb\\u{a}");
        assert_eq!(super::printable("ünï"), "ünï");
    }
}
