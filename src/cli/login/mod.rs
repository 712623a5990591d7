//! `auth login`, `auth logout`, `auth whoami`: a gateway token by OpenID Connect login.
//!
//! `login` runs the authorization-code flow with PKCE against an OpenID provider that the
//! gateway trusts (`authentication.trust.oidc`): it reads the provider's discovery document,
//! prints the authorization URL (and opens a browser with `--open`), takes the one redirect
//! back to `http://127.0.0.1:<ephemeral>/callback` ([`loopback`]), exchanges the code for an ID
//! token ([`oidc`]), and trades that at the gateway's `ExchangeOidcToken` for a gateway token,
//! which it saves ([`store`]). The gateway client commands send the saved token when no
//! credential flag is given, and only to the gateway that issued it.
//!
//! - `oidc`      discovery, PKCE, the authorization URL, the code exchange
//! - `loopback`  the redirect listener
//! - [`store`]   the saved-login file

mod loopback;
mod oidc;
pub mod store;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use super::CliError;
use super::connect::{DEFAULT_GATEWAY, GatewayArgs};
use super::output::{self, Format};
use crate::client::parse_duration;
use crate::env::Env;
use crate::gateway::caller::{Grant, GrantKind};
use crate::gateway::pb;

/// Flags of `auth login`. `Debug` never shows the client secret.
#[derive(Clone, clap::Args)]
pub struct LoginArgs {
    /// The OpenID provider, as the gateway's `authentication.trust.oidc` names it.
    #[arg(long, value_name = "URL")]
    pub issuer: String,
    /// The client id registered at the provider (one of the issuer's `audiences`).
    #[arg(long, value_name = "ID")]
    pub client_id: String,
    /// The client secret of a confidential client (visible to `ps` and kept in the shell's
    /// history: prefer --client-secret-file).
    #[arg(long, value_name = "SECRET", conflicts_with = "client_secret_file")]
    pub client_secret: Option<String>,
    /// A file holding the client secret, readable by its owner only (`-`: standard input).
    #[arg(long, value_name = "FILE")]
    pub client_secret_file: Option<PathBuf>,
    /// The scopes asked for.
    #[arg(long, default_value = "openid email")]
    pub scope: String,
    /// Open the authorization URL with the system's opener (xdg-open, open).
    #[arg(long)]
    pub open: bool,
    /// How long to wait for the browser to come back.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub wait: Duration,
    /// The lifetime asked of the gateway token; it never outlives the ID token nor the
    /// gateway's `max_token_ttl_seconds`.
    #[arg(long, default_value = "12h", value_parser = parse_duration)]
    pub ttl: Duration,
    /// Gateway address: HOST:PORT or http://HOST:PORT.
    #[arg(long, env = "PORTCULLIS_GATEWAY", default_value = DEFAULT_GATEWAY, value_name = "H:P")]
    pub gateway: String,
    /// Use gRPC-Web over HTTP/1.1 instead of gRPC over HTTP/2.
    #[arg(long = "grpc-web")]
    pub grpc_web: bool,
    /// Time allowed for each call to the provider and the gateway.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Output format: json, or table (also `text`).
    #[arg(long, short = 'o', value_enum)]
    pub output: Option<Format>,
}

impl std::fmt::Debug for LoginArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginArgs")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("gateway", &self.gateway)
            .finish_non_exhaustive()
    }
}

/// Flags of `auth logout` and `auth whoami`.
#[derive(Debug, Clone, clap::Args)]
pub struct SavedArgs {
    /// Output format: json, or table (also `text`).
    #[arg(long, short = 'o', value_enum)]
    pub output: Option<Format>,
}

/// The saved login's file, or a usage error when there is no place for one.
fn saved_path(env: &dyn Env) -> Result<PathBuf, CliError> {
    store::path(env).ok_or_else(|| {
        CliError::Usage(format!(
            "no place for the saved login: set {} or HOME",
            store::FILE_ENV
        ))
    })
}

/// `auth login`.
pub async fn login(a: &LoginArgs, env: &dyn Env) -> Result<(), CliError> {
    let path = saved_path(env)?;
    let secret = super::secret::either(
        a.client_secret.as_deref(),
        a.client_secret_file.as_deref(),
        "--client-secret",
        true,
    )?;
    let gateway = GatewayArgs::plain(&a.gateway, a.grpc_web, a.timeout, a.output);
    let target = gateway.target()?;
    // An unreachable gateway is said before anyone logs in for nothing.
    drop(gateway.connect_without_credentials().await?);
    let http = crate::authn::callout::client(a.timeout).map_err(CliError::Failed)?;
    let provider = oidc::discover(&http, &a.issuer).await?;
    let callback = loopback::Callback::bind().await?;
    let redirect_uri = callback.redirect_uri.clone();
    let (state, nonce, verifier) = (
        oidc::random_token(),
        oidc::random_token(),
        oidc::random_token(),
    );
    let request = oidc::Request {
        client_id: &a.client_id,
        redirect_uri: &redirect_uri,
        scope: &a.scope,
        state: &state,
        nonce: &nonce,
        verifier: &verifier,
    };
    let url = oidc::authorization_url(&provider, &request);
    eprintln!("Open this URL in a browser to log in:\n\n  {url}\n");
    if a.open {
        open_browser(&url);
    }
    eprintln!("Waiting for the login to come back to {redirect_uri} ...");
    let code = callback.code(&provider, &state, a.wait).await?;
    let client = oidc::Client {
        id: &a.client_id,
        secret: secret.as_deref(),
    };
    let id_token = oidc::exchange_code(&http, &provider, &client, &request, &code).await?;
    oidc::check_id_token(&id_token, &provider.issuer, &nonce)?;

    let gw = gateway.connect_without_credentials().await?;
    let token = pb::auth_service_client::AuthServiceClient::with_origin(
        gw.transport.clone(),
        gw.origin.clone(),
    )
    .exchange_oidc_token(gw.request(pb::ExchangeOidcTokenRequest {
        id_token,
        scope: None,
        ttl_seconds: a.ttl.as_secs().max(1),
    }))
    .await
    .map_err(|s| gw.failed("ExchangeOidcToken", &s))?
    .into_inner();
    let saved = store::SavedLogin {
        gateway: target.uri,
        issuer: provider.issuer.clone(),
        token: token.token,
        expires_at: token.expires_at,
    };
    store::save(&path, &saved)?;
    describe(&saved, &path, Format::resolve(a.output))
}

/// Runs the system's URL opener, if there is one; the URL is printed either way.
fn open_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    let started = std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if let Err(e) = started {
        eprintln!("note: cannot start {opener} ({e}); open the URL yourself");
    }
}

/// `auth logout`.
pub fn logout(a: &SavedArgs, env: &dyn Env) -> Result<(), CliError> {
    let path = saved_path(env)?;
    let removed = store::remove(&path)?;
    match Format::resolve(a.output) {
        Format::Json => output::json_line(&json!({"removed": removed, "file": path})),
        Format::Table if removed => {
            output::text(&format!("logged out ({} removed)", path.display()))
        }
        Format::Table => output::text("not logged in"),
    }
}

/// `auth whoami`: exit 1 when not logged in or the token has expired.
pub fn whoami(a: &SavedArgs, env: &dyn Env) -> Result<(), CliError> {
    let path = saved_path(env)?;
    let saved = store::load(&path)?.ok_or_else(|| {
        CliError::Failed(format!(
            "not logged in (no {}): run `portcullis auth login`",
            path.display()
        ))
    })?;
    describe(&saved, &path, Format::resolve(a.output))?;
    if saved.expires_at <= crate::jose::clock::now() {
        return Err(CliError::Denied);
    }
    Ok(())
}

/// Prints what a saved login holds: the token's subject, grants, scope and expiry.
fn describe(
    saved: &store::SavedLogin,
    path: &std::path::Path,
    format: Format,
) -> Result<(), CliError> {
    let claims = saved
        .claims()
        .map_err(|e| CliError::Failed(format!("saved login {}: the token: {e}", path.display())))?;
    let expired = saved.expires_at <= crate::jose::clock::now();
    let grants = claims.grants.clone().unwrap_or_default();
    match format {
        Format::Json => output::json_line(&json!({
            "subject": claims.sub,
            "grants": grants,
            "scope": claims.scope,
            "expires_at": saved.expires_at,
            "expired": expired,
            "gateway": saved.gateway,
            "issuer": saved.issuer,
            "file": path,
        })),
        Format::Table => {
            let scope = [
                ("ns", &claims.scope.ns),
                ("agent", &claims.scope.agent),
                ("session", &claims.scope.session),
                ("channel", &claims.scope.channel),
            ]
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
            .collect::<Vec<_>>();
            let when = chrono::DateTime::from_timestamp(saved.expires_at, 0)
                .map(|t| t.to_rfc3339())
                .unwrap_or_else(|| saved.expires_at.to_string());
            output::text(&output::pairs(&[
                ("subject", super::authn::printable(&claims.sub)),
                (
                    "grants",
                    grants.iter().map(grant_text).collect::<Vec<_>>().join(", "),
                ),
                (
                    "scope",
                    if scope.is_empty() {
                        "everything".into()
                    } else {
                        super::authn::printable(&scope.join(" "))
                    },
                ),
                (
                    "expires",
                    if expired {
                        format!("{when} (EXPIRED: run `portcullis auth login`)")
                    } else {
                        when
                    },
                ),
                ("gateway", saved.gateway.clone()),
                ("issuer", super::authn::printable(&saved.issuer)),
            ]))
        }
    }
}

/// `readwrite@acme`, `read` (everywhere).
fn grant_text(g: &Grant) -> String {
    let kind = match g.kind {
        GrantKind::Read => "read",
        GrantKind::Readwrite => "readwrite",
    };
    let at: Vec<&str> = [&g.namespace, &g.agent, &g.session, &g.channel]
        .iter()
        .filter_map(|v| v.as_deref())
        .collect();
    if at.is_empty() {
        kind.to_string()
    } else {
        super::authn::printable(&format!("{kind}@{}", at.join("/")))
    }
}
