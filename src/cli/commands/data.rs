//! `data get|put|rm`.

use serde_json::json;

use super::*;
use crate::cli::CliError;
use crate::cli::connect::{Gateway, GatewayArgs};
use crate::cli::output::{self, Format};
use crate::gateway::pb;

/// `portcullis data`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum DataCommand {
    /// Print the document at PATH (slash-separated; empty: all of it).
    Get {
        /// Slash-separated path (`acme/limits`); empty: the whole document.
        #[arg(default_value = "")]
        path: String,
        /// Namespace [default: the token's, else the default namespace].
        #[arg(long, short = 'n')]
        namespace: Option<String>,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Set the document at PATH to VALUE (JSON, @FILE, or - for stdin).
    Put {
        /// Slash-separated path (`acme/limits`).
        path: String,
        /// The value: JSON, @FILE, or - for stdin.
        value: String,
        /// Namespace [default: the token's, else the default namespace].
        #[arg(long, short = 'n')]
        namespace: Option<String>,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Remove the document at PATH.
    Rm {
        /// Slash-separated path (`acme/limits`).
        path: String,
        /// Namespace [default: the token's, else the default namespace].
        #[arg(long, short = 'n')]
        namespace: Option<String>,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
}

fn data_client(
    gw: &Gateway,
) -> pb::data_service_client::DataServiceClient<crate::cli::connect::Transport> {
    pb::data_service_client::DataServiceClient::with_origin(gw.transport.clone(), gw.origin.clone())
}

/// `data ...`.
pub async fn data(cmd: DataCommand) -> Result<(), CliError> {
    match cmd {
        DataCommand::Get {
            path,
            namespace,
            gateway,
        } => {
            let gw = gateway.connect().await?;
            let r = data_client(&gw)
                .get_data(gw.request(pb::GetDataRequest {
                    namespace: ns(&namespace),
                    path,
                }))
                .await
                .map_err(|s| gw.failed("GetData", &s))?
                .into_inner();
            let value = r.value.as_ref().and_then(pb::value_to_json);
            match gw.format {
                Format::Json => output::json_line(&match &value {
                    Some(v) => {
                        json!({"namespace": r.namespace, "revision": r.revision, "result": v})
                    }
                    None => json!({"namespace": r.namespace, "revision": r.revision}),
                }),
                Format::Table => output::text(
                    &value
                        .map(|v| serde_json::to_string_pretty(&v).unwrap_or_default())
                        .unwrap_or_else(|| "(undefined)".into()),
                ),
            }
        }
        DataCommand::Put {
            path,
            value,
            namespace,
            gateway,
        } => {
            let value = parse_json("VALUE", &read_arg(&value)?)?;
            let gw = gateway.connect().await?;
            let r = data_client(&gw)
                .put_data(gw.request(pb::PutDataRequest {
                    namespace: ns(&namespace),
                    path,
                    value: Some(pb::json_to_value(&value)),
                }))
                .await
                .map_err(|s| gw.failed("PutData", &s))?
                .into_inner();
            written(&gw, &r.namespace, r.revision)
        }
        DataCommand::Rm {
            path,
            namespace,
            gateway,
        } => {
            let gw = gateway.connect().await?;
            let r = data_client(&gw)
                .delete_data(gw.request(pb::DeleteDataRequest {
                    namespace: ns(&namespace),
                    path,
                }))
                .await
                .map_err(|s| gw.failed("DeleteData", &s))?
                .into_inner();
            written(&gw, &r.namespace, r.revision)
        }
    }
}
