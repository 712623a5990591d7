//! `policy ls|get|put|rm`.

use std::path::PathBuf;

use serde_json::json;

use super::*;
use crate::cli::CliError;
use crate::cli::connect::{Gateway, GatewayArgs};
use crate::cli::output::{self, Format};
use crate::gateway::pb;

/// `portcullis policy`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum PolicyCommand {
    /// List the modules of a namespace.
    Ls {
        /// Namespace [default: the token's, else the default namespace].
        #[arg(long, short = 'n')]
        namespace: Option<String>,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Print one module.
    Get {
        /// The module id (as `policy ls` lists it).
        id: String,
        /// Namespace [default: the token's, else the default namespace].
        #[arg(long, short = 'n')]
        namespace: Option<String>,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Add or replace a module (compiled before it serves) from FILE, or - for stdin.
    Put {
        /// The module id: a new one, or the id of a module to replace.
        id: String,
        /// The Rego file, or - for stdin.
        file: PathBuf,
        /// Namespace [default: the token's, else the default namespace].
        #[arg(long, short = 'n')]
        namespace: Option<String>,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Remove a module written through the gateway.
    Rm {
        /// The module id.
        id: String,
        /// Namespace [default: the token's, else the default namespace].
        #[arg(long, short = 'n')]
        namespace: Option<String>,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
}

fn policy_client(
    gw: &Gateway,
) -> pb::policy_service_client::PolicyServiceClient<crate::cli::connect::Transport> {
    pb::policy_service_client::PolicyServiceClient::with_origin(
        gw.transport.clone(),
        gw.origin.clone(),
    )
}

fn source_name(s: i32) -> &'static str {
    match pb::PolicySource::try_from(s) {
        Ok(pb::PolicySource::File) => "file",
        Ok(pb::PolicySource::Gateway) => "gateway",
        _ => "unknown",
    }
}

/// `policy ...`.
pub async fn policy(cmd: PolicyCommand) -> Result<(), CliError> {
    match cmd {
        PolicyCommand::Ls { namespace, gateway } => {
            let gw = gateway.connect().await?;
            let r = policy_client(&gw)
                .list_policies(gw.request(pb::ListPoliciesRequest {
                    namespace: ns(&namespace),
                }))
                .await
                .map_err(|s| gw.failed("ListPolicies", &s))?
                .into_inner();
            match gw.format {
                Format::Json => output::json_line(&json!({
                    "namespace": r.namespace,
                    "revision": r.revision,
                    "policies": r.policies.iter().map(|p| json!({
                        "id": p.id, "package": p.package, "source": source_name(p.source),
                        "shadows_file": p.shadows_file,
                    })).collect::<Vec<_>>(),
                })),
                Format::Table => output::text(&output::table(
                    &["ID", "PACKAGE", "SOURCE"],
                    &r.policies
                        .iter()
                        .map(|p| {
                            let mut source = source_name(p.source).to_string();
                            if p.shadows_file {
                                source.push_str(" (shadows file)");
                            }
                            vec![p.id.clone(), p.package.clone(), source]
                        })
                        .collect::<Vec<_>>(),
                )),
            }
        }
        PolicyCommand::Get {
            id,
            namespace,
            gateway,
        } => {
            let gw = gateway.connect().await?;
            let p = policy_client(&gw)
                .get_policy(gw.request(pb::GetPolicyRequest {
                    namespace: ns(&namespace),
                    id,
                }))
                .await
                .map_err(|s| gw.failed("GetPolicy", &s))?
                .into_inner();
            match gw.format {
                Format::Json => output::json_line(&json!({
                    "id": p.id, "package": p.package, "source": source_name(p.source), "rego": p.rego,
                })),
                Format::Table => output::text(&p.rego),
            }
        }
        PolicyCommand::Put {
            id,
            file,
            namespace,
            gateway,
        } => {
            let rego = read_arg(&if file.as_os_str() == "-" {
                "-".to_string()
            } else {
                format!("@{}", file.display())
            })?;
            let gw = gateway.connect().await?;
            let r = policy_client(&gw)
                .put_policy(gw.request(pb::PutPolicyRequest {
                    namespace: ns(&namespace),
                    id,
                    rego,
                }))
                .await
                .map_err(|s| gw.failed("PutPolicy", &s))?
                .into_inner();
            written(&gw, &r.namespace, r.revision)
        }
        PolicyCommand::Rm {
            id,
            namespace,
            gateway,
        } => {
            let gw = gateway.connect().await?;
            let r = policy_client(&gw)
                .delete_policy(gw.request(pb::DeletePolicyRequest {
                    namespace: ns(&namespace),
                    id,
                }))
                .await
                .map_err(|s| gw.failed("DeletePolicy", &s))?
                .into_inner();
            written(&gw, &r.namespace, r.revision)
        }
    }
}
