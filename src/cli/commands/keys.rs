//! `keys create|ls|revoke`: API keys.

use serde_json::json;

use crate::cli::CliError;
use crate::cli::connect::GatewayArgs;
use crate::cli::output::{self, Format};
use crate::gateway::pb;

/// `portcullis keys`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum KeysCommand {
    /// Create an API key; its secret is printed this once.
    Create {
        /// The key's subject: yours (the default) or a sub-identity of yours, `<you>/<name>`.
        #[arg(long, default_value = "")]
        subject: String,
        /// A scope the key carries (repeatable): `gateway:read|readwrite[@namespace]`, or one
        /// listed in the gateway's `api_key_scopes`.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Lifetime in seconds (0: none).
        #[arg(long, default_value_t = 0)]
        ttl_seconds: u64,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// List API keys (never their secrets), with when each was last used.
    #[command(visible_alias = "list")]
    Ls {
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Revoke an API key.
    Revoke {
        /// The key's id (as `keys ls` lists it), not its secret.
        id: String,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
}

/// `keys ...`.
pub async fn keys(cmd: KeysCommand) -> Result<(), CliError> {
    let (gateway, what) = match &cmd {
        KeysCommand::Create { gateway, .. } => (gateway, "CreateApiKey"),
        KeysCommand::Ls { gateway } => (gateway, "ListApiKeys"),
        KeysCommand::Revoke { gateway, .. } => (gateway, "RevokeApiKey"),
    };
    let gw = gateway.connect().await?;
    let mut client = pb::auth_service_client::AuthServiceClient::with_origin(
        gw.transport.clone(),
        gw.origin.clone(),
    );
    let failed = |s: tonic::Status| gw.failed(what, &s);
    match cmd {
        KeysCommand::Create {
            subject,
            scopes,
            ttl_seconds,
            ..
        } => {
            let r = client
                .create_api_key(gw.request(pb::CreateApiKeyRequest {
                    subject,
                    scopes,
                    ttl_seconds,
                }))
                .await
                .map_err(failed)?
                .into_inner();
            let key = r.key.unwrap_or_default();
            match gw.format {
                Format::Json => output::json_line(
                    &json!({"id": key.id, "subject": key.subject, "secret": r.secret}),
                ),
                Format::Table => output::text(&output::pairs(&[
                    ("id", key.id),
                    ("subject", key.subject),
                    ("secret", format!("{} (shown once)", r.secret)),
                ])),
            }
        }
        KeysCommand::Ls { .. } => {
            let r = client
                .list_api_keys(gw.request(pb::ListApiKeysRequest {}))
                .await
                .map_err(failed)?
                .into_inner();
            match gw.format {
                Format::Json => output::json_line(&json!({"keys": r.keys.iter().map(|k| json!({
                    "id": k.id, "subject": k.subject, "scopes": k.scopes,
                    "expires_at": k.expires_at, "revoked": k.revoked, "created_at": k.created_at,
                    "last_used_at": k.last_used_at,
                })).collect::<Vec<_>>()})),
                Format::Table => output::text(&output::table(
                    &["ID", "SUBJECT", "SCOPES", "EXPIRES", "REVOKED", "LAST USED"],
                    &r.keys
                        .iter()
                        .map(|k| {
                            vec![
                                k.id.clone(),
                                k.subject.clone(),
                                k.scopes.join(","),
                                k.expires_at.to_string(),
                                k.revoked.to_string(),
                                k.last_used_at.to_string(),
                            ]
                        })
                        .collect::<Vec<_>>(),
                )),
            }
        }
        KeysCommand::Revoke { id, .. } => {
            let r = client
                .revoke_api_key(gw.request(pb::RevokeApiKeyRequest { id }))
                .await
                .map_err(failed)?
                .into_inner();
            match gw.format {
                Format::Json => output::json_line(&json!({"revoked": r.revoked})),
                Format::Table => output::text(if r.revoked { "revoked" } else { "not revoked" }),
            }
        }
    }
}
