//! `portcullis auth root-token|namespace-token|agent-token|session-token|channel-token`:
//! mints a gateway JWT locally with the gateway's HS256 secret; `auth login|logout|whoami`
//! get one from the gateway by OpenID Connect login instead ([`crate::cli::login`]).
//!
//! The secret comes from `--jwt-secret`, else `PORTCULLIS_JWT_SECRET`, else
//! `GATEWAY_JWT_SECRET`. Each kind needs its scope flags (`namespace-token --namespace`,
//! `agent-token --namespace --agent`, `session-token --namespace --agent --session`,
//! `channel-token --namespace --channel [--agent]`) and refuses the ones that would widen it.
//! The token carries one grant, `--grant` (`readwrite` by default for `root-token`, `read`
//! for the others), and expires after `--ttl` (default 1h).

use std::time::Duration;

use serde_json::json;

use super::CliError;
use super::login::{self, LoginArgs, SavedArgs};
use super::output::{self, Format};
use crate::client::parse_duration;
use crate::env::Env;
use crate::gateway::caller::{Audience, Claims, Grant, GrantKind, Scope, ScopeClaims, sign};
use crate::gateway::config::{DEFAULT_AUDIENCE, MIN_JWT_SECRET_BYTES};
use crate::jose::clock::now_u64 as now;

/// `portcullis auth`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AuthCommand {
    #[command(flatten)]
    Mint(MintCommand),
    /// Log in with an OpenID provider the gateway trusts, and save the gateway token the
    /// client commands then use.
    Login(LoginArgs),
    /// Remove the saved login.
    Logout(SavedArgs),
    /// Show the saved login: subject, grants, scope, expiry (exit 1 when expired or none).
    Whoami(SavedArgs),
}

impl AuthCommand {
    /// Runs the command.
    pub async fn run(&self, env: &dyn Env) -> Result<(), CliError> {
        match self {
            AuthCommand::Mint(m) => m.run(env),
            AuthCommand::Login(a) => login::login(a, env).await,
            AuthCommand::Logout(a) => login::logout(a, env),
            AuthCommand::Whoami(a) => login::whoami(a, env),
        }
    }
}

/// The token kinds minted locally.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum MintCommand {
    /// A token for every namespace.
    RootToken(TokenOptions),
    /// A token for one namespace and its children (--namespace).
    NamespaceToken(TokenArgs),
    /// A token for one agent of a namespace (--namespace --agent).
    AgentToken(TokenArgs),
    /// A token for one session of an agent (--namespace --agent --session).
    SessionToken(TokenArgs),
    /// A token for one channel of a namespace (--namespace --channel [--agent]).
    ChannelToken(TokenArgs),
}

/// Flags of the scoped `auth` commands: the scope, then [`TokenOptions`].
#[derive(Debug, Clone, clap::Args)]
pub struct TokenArgs {
    #[command(flatten)]
    pub scope: ScopeFlags,
    #[command(flatten)]
    pub options: TokenOptions,
}

/// Where a scoped token applies.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ScopeFlags {
    /// The namespace (and its children) the token is for.
    #[arg(long)]
    pub namespace: Option<String>,
    /// The agent within the namespace.
    #[arg(long)]
    pub agent: Option<String>,
    /// The session of the agent.
    #[arg(long)]
    pub session: Option<String>,
    /// The channel within the namespace.
    #[arg(long)]
    pub channel: Option<String>,
}

/// A root token's scope: everything.
const NO_SCOPE: ScopeFlags = ScopeFlags {
    namespace: None,
    agent: None,
    session: None,
    channel: None,
};

/// Flags of every `auth` command. `Debug` never shows the secret.
#[derive(Clone, clap::Args)]
pub struct TokenOptions {
    /// The grant [default: readwrite for root-token, read otherwise].
    #[arg(long, value_enum)]
    pub grant: Option<GrantArg>,
    /// Lifetime, e.g. 30m, 1h.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub ttl: Duration,
    /// The token's subject.
    #[arg(long, default_value = "portcullis-cli")]
    pub subject: String,
    /// The token's audience (the gateway's `gateway.audience`).
    #[arg(long, default_value = DEFAULT_AUDIENCE)]
    pub audience: String,
    /// The gateway's HS256 secret [env: PORTCULLIS_JWT_SECRET, then GATEWAY_JWT_SECRET].
    #[arg(long = "jwt-secret")]
    pub jwt_secret: Option<String>,
    /// Output format: json, or table (also `text`): the bare token [default: json when stdout
    /// is not a terminal, else the bare token].
    #[arg(long, short = 'o', value_enum)]
    pub output: Option<Format>,
}

impl std::fmt::Debug for TokenOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenOptions")
            .field("grant", &self.grant)
            .field("ttl", &self.ttl)
            .field(
                "jwt_secret",
                &self.jwt_secret.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

/// `--grant`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GrantArg {
    Read,
    Readwrite,
}

impl MintCommand {
    fn parts(&self) -> (&'static str, &ScopeFlags, &TokenOptions) {
        match self {
            MintCommand::RootToken(o) => ("root-token", &NO_SCOPE, o),
            MintCommand::NamespaceToken(a) => ("namespace-token", &a.scope, &a.options),
            MintCommand::AgentToken(a) => ("agent-token", &a.scope, &a.options),
            MintCommand::SessionToken(a) => ("session-token", &a.scope, &a.options),
            MintCommand::ChannelToken(a) => ("channel-token", &a.scope, &a.options),
        }
    }

    /// The claims this command mints, checked against its kind.
    pub fn claims(&self, issued_at: u64) -> Result<Claims, CliError> {
        let (kind, sc, a) = self.parts();
        let has = |v: &Option<String>| v.is_some();
        // (required, allowed) per scope field: namespace, agent, session, channel.
        let rules: [(bool, bool); 4] = match self {
            MintCommand::RootToken(_) => [(false, false); 4],
            MintCommand::NamespaceToken(_) => {
                [(true, true), (false, false), (false, false), (false, false)]
            }
            MintCommand::AgentToken(_) => {
                [(true, true), (true, true), (false, false), (false, false)]
            }
            MintCommand::SessionToken(_) => {
                [(true, true), (true, true), (true, true), (false, false)]
            }
            MintCommand::ChannelToken(_) => {
                [(true, true), (false, true), (false, false), (true, true)]
            }
        };
        let fields = [
            ("--namespace", has(&sc.namespace)),
            ("--agent", has(&sc.agent)),
            ("--session", has(&sc.session)),
            ("--channel", has(&sc.channel)),
        ];
        for ((flag, given), (required, allowed)) in fields.iter().zip(rules) {
            if required && !given {
                return Err(CliError::Usage(format!("{kind} needs {flag}")));
            }
            if *given && !allowed {
                return Err(CliError::Usage(format!("{kind} does not take {flag}")));
            }
        }
        let scope = Scope {
            namespace: sc.namespace.clone(),
            agent: sc.agent.clone(),
            session: sc.session.clone(),
            channel: sc.channel.clone(),
        };
        scope.validate().map_err(CliError::Usage)?;
        if a.subject.is_empty() {
            return Err(CliError::Usage("--subject must not be empty".into()));
        }
        if a.ttl.is_zero() {
            return Err(CliError::Usage("--ttl must be more than 0".into()));
        }
        let grant = match a.grant {
            Some(GrantArg::Read) => GrantKind::Read,
            Some(GrantArg::Readwrite) => GrantKind::Readwrite,
            None if matches!(self, MintCommand::RootToken(_)) => GrantKind::Readwrite,
            None => GrantKind::Read,
        };
        Ok(Claims {
            sub: a.subject.clone(),
            aud: Audience::One(a.audience.clone()),
            exp: issued_at.saturating_add(a.ttl.as_secs().max(1)),
            iat: Some(issued_at),
            jti: Some(uuid::Uuid::new_v4().to_string()),
            scope: ScopeClaims::from(&scope),
            grants: Some(vec![Grant::all(grant)]),
        })
    }

    /// Mints and prints the token.
    pub fn run(&self, env: &dyn Env) -> Result<(), CliError> {
        let (_, _, a) = self.parts();
        let secret = a
            .jwt_secret
            .clone()
            .or_else(|| env.get("PORTCULLIS_JWT_SECRET"))
            .or_else(|| env.get("GATEWAY_JWT_SECRET"))
            .ok_or_else(|| {
                CliError::Usage(
                    "no secret: pass --jwt-secret or set PORTCULLIS_JWT_SECRET or GATEWAY_JWT_SECRET"
                        .into(),
                )
            })?;
        if secret.len() < MIN_JWT_SECRET_BYTES {
            return Err(CliError::Usage(format!(
                "the JWT secret must be at least {MIN_JWT_SECRET_BYTES} bytes"
            )));
        }
        let claims = self.claims(now())?;
        let token = sign(&claims, secret.as_bytes()).map_err(CliError::Failed)?;
        match Format::resolve(a.output) {
            Format::Table => output::text(&token),
            Format::Json => output::json_line(&json!({
                "token": token,
                "expires_at": claims.exp,
                "claims": claims,
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(subcommand)]
        cmd: MintCommand,
    }

    fn claims(args: &[&str]) -> Result<Claims, CliError> {
        let t = T::try_parse_from(std::iter::once("auth").chain(args.iter().copied()))
            .map_err(|e| CliError::Usage(e.to_string()))?;
        t.cmd.claims(1000)
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let t = T::try_parse_from(["auth", "root-token", "--jwt-secret", "s3cr3t-value"]).unwrap();
        let text = format!("{:?}", t.cmd);
        assert!(!text.contains("s3cr3t-value"), "{text}");
    }

    #[test]
    fn kinds_need_and_refuse_their_flags() {
        let c = claims(&["root-token"]).unwrap();
        assert_eq!(c.grants, Some(vec![Grant::all(GrantKind::Readwrite)]));
        assert_eq!(c.exp, 1000 + 3600);
        assert!(claims(&["root-token", "--namespace", "a"]).is_err());
        assert!(claims(&["namespace-token"]).is_err());
        let c = claims(&[
            "agent-token",
            "--namespace",
            "a",
            "--agent",
            "b",
            "--ttl",
            "5m",
        ])
        .unwrap();
        assert_eq!(c.scope.agent.as_deref(), Some("b"));
        assert_eq!(c.grants, Some(vec![Grant::all(GrantKind::Read)]));
        assert_eq!(c.exp, 1300);
        assert!(claims(&["agent-token", "--namespace", "a"]).is_err());
        assert!(claims(&["session-token", "--namespace", "a", "--agent", "b"]).is_err());
        assert!(
            claims(&[
                "channel-token",
                "--namespace",
                "a",
                "--channel",
                "c",
                "--agent",
                "x"
            ])
            .is_ok()
        );
        assert!(
            claims(&[
                "channel-token",
                "--namespace",
                "a",
                "--channel",
                "c",
                "--session",
                "s"
            ])
            .is_err()
        );
        assert!(claims(&["namespace-token", "--namespace", ""]).is_err());
        assert!(claims(&["namespace-token", "--namespace", "a::b"]).is_err());
        assert!(claims(&["root-token", "--grant", "admin"]).is_err());
    }
}
