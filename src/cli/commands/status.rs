//! `status`.

use serde_json::json;

use crate::cli::CliError;
use crate::cli::connect::GatewayArgs;
use crate::cli::output::{self, Format};
use crate::gateway::pb;

/// `portcullis status`.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub gateway: GatewayArgs,
}

/// `status`.
pub async fn status(a: StatusArgs) -> Result<(), CliError> {
    let gw = a.gateway.connect().await?;
    let r = pb::status_service_client::StatusServiceClient::with_origin(
        gw.transport.clone(),
        gw.origin.clone(),
    )
    .get_status(gw.request(pb::GetStatusRequest {}))
    .await
    .map_err(|s| gw.failed("GetStatus", &s))?
    .into_inner();
    match gw.format {
        Format::Json => output::json_line(&json!({
            "version": r.version,
            "uptime_seconds": r.uptime_seconds,
            "policy_revision": r.policy_revision,
            "bundle_revisions": r.bundle_revisions,
            "default_namespace": r.default_namespace,
            "auth_mode": r.auth_mode,
            "namespaces": r.namespaces.iter().map(|n| json!({
                "name": n.name, "revision": n.revision, "policies": n.policies, "loaded_at": n.loaded_at,
            })).collect::<Vec<_>>(),
        })),
        Format::Table => {
            let mut text = output::pairs(&[
                ("version", r.version.clone()),
                ("uptime", format!("{}s", r.uptime_seconds)),
                ("auth mode", r.auth_mode.clone()),
                ("policy revision", r.policy_revision.to_string()),
            ]);
            text.push('\n');
            text.push_str(&output::table(
                &["NAMESPACE", "REVISION", "POLICIES"],
                &r.namespaces
                    .iter()
                    .map(|n| {
                        vec![
                            n.name.clone(),
                            n.revision.to_string(),
                            n.policies.to_string(),
                        ]
                    })
                    .collect::<Vec<_>>(),
            ));
            output::text(&text)
        }
    }
}
