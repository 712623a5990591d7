//! `decide`: one decision from the gateway.

use serde_json::json;

use super::*;
use crate::cli::CliError;
use crate::cli::connect::GatewayArgs;
use crate::cli::output::{self, Format};
use crate::gateway::pb::{self, Outcome};

/// `portcullis decide`.
#[derive(Debug, Clone, clap::Args)]
pub struct DecideArgs {
    /// Namespace [default: the token's, else the default namespace].
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// Decision path, e.g. envoy/authz/allow [default: the configured one].
    #[arg(long)]
    pub path: Option<String>,
    /// The input document as JSON, or @FILE, or - for stdin.
    #[arg(long, short = 'i')]
    pub input: Option<String>,
    /// The agent the decision is for (a scope below the namespace; must lie within the token's).
    #[arg(long)]
    pub agent: Option<String>,
    /// The session the decision is for (below the agent).
    #[arg(long)]
    pub session: Option<String>,
    /// The channel the decision is for (below the session).
    #[arg(long)]
    pub channel: Option<String>,
    #[command(flatten)]
    pub gateway: GatewayArgs,
}

/// `decide`: prints the decision; exit 1 unless it is an allow.
pub async fn decide(a: DecideArgs) -> Result<(), CliError> {
    let input = match &a.input {
        None => None,
        Some(text) => {
            let j = parse_json("--input", &read_arg(text)?)?;
            if !j.is_object() {
                return Err(CliError::Usage("--input must be a JSON object".into()));
            }
            Some(pb::json_to_value(&j))
        }
    };
    let gw = a.gateway.connect().await?;
    let mut client = pb::decision_service_client::DecisionServiceClient::with_origin(
        gw.transport.clone(),
        gw.origin.clone(),
    );
    let r = client
        .decide(gw.request(pb::DecideRequest {
            namespace: ns(&a.namespace),
            path: a.path.clone().unwrap_or_default(),
            input,
            agent: a.agent.clone().unwrap_or_default(),
            session: a.session.clone().unwrap_or_default(),
            channel: a.channel.clone().unwrap_or_default(),
        }))
        .await
        .map_err(|s| gw.failed("Decide", &s))?
        .into_inner();
    let result = value_json(&r.result);
    match gw.format {
        Format::Json => output::json_line(&json!({
            "decision_id": r.decision_id,
            "namespace": r.namespace,
            "revision": r.revision,
            "outcome": outcome_name(r.outcome),
            "result": result,
            "error": (!r.error.is_empty()).then_some(&r.error),
        }))?,
        Format::Table => {
            let mut rows = vec![
                ("outcome", outcome_name(r.outcome).to_string()),
                ("namespace", r.namespace.clone()),
                ("revision", r.revision.to_string()),
                ("decision", r.decision_id.clone()),
                (
                    "result",
                    serde_json::to_string_pretty(&result).unwrap_or_default(),
                ),
            ];
            if !r.error.is_empty() {
                rows.push(("error", r.error.clone()));
            }
            output::text(&output::pairs(&rows))?;
        }
    }
    if r.outcome == Outcome::Allow as i32 {
        Ok(())
    } else {
        Err(CliError::Denied)
    }
}
