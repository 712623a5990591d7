//! `logs tail`: follow decisions as they are made.

use serde_json::{Value as Json, json};

use super::*;
use crate::cli::CliError;
use crate::cli::connect::GatewayArgs;
use crate::cli::output::{self, Format};
use crate::gateway::pb::{self, Outcome};

/// `portcullis logs`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum LogsCommand {
    /// Follow the decisions as they are made.
    Tail(TailArgs),
}

/// `portcullis logs tail`.
#[derive(Debug, Clone, clap::Args)]
pub struct TailArgs {
    /// Only this namespace and its children.
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// Only decisions for this agent.
    #[arg(long)]
    pub agent: Option<String>,
    /// Only decisions for this session.
    #[arg(long)]
    pub session: Option<String>,
    /// Only decisions for this channel.
    #[arg(long)]
    pub channel: Option<String>,
    /// Only decisions with this outcome.
    #[arg(long, value_enum)]
    pub outcome: Option<OutcomeArg>,
    /// Stop after this many decisions.
    #[arg(long)]
    pub count: Option<u64>,
    #[command(flatten)]
    pub gateway: GatewayArgs,
}

/// `--outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutcomeArg {
    Allow,
    Deny,
    Undefined,
    Error,
    Other,
}

/// `logs tail`: one line per decision until `--count` or the stream ends.
pub async fn logs(cmd: LogsCommand) -> Result<(), CliError> {
    let LogsCommand::Tail(a) = cmd;
    let gw = a.gateway.connect().await?;
    let mut client = pb::decision_log_service_client::DecisionLogServiceClient::with_origin(
        gw.transport.clone(),
        gw.origin.clone(),
    );
    let outcome = match a.outcome {
        None => Outcome::Unspecified,
        Some(OutcomeArg::Allow) => Outcome::Allow,
        Some(OutcomeArg::Deny) => Outcome::Deny,
        Some(OutcomeArg::Undefined) => Outcome::Undefined,
        Some(OutcomeArg::Error) => Outcome::Error,
        Some(OutcomeArg::Other) => Outcome::Other,
    };
    let mut stream = client
        .stream_decisions(gw.stream_request(pb::StreamDecisionsRequest {
            namespace: ns(&a.namespace),
            agent: a.agent.clone().unwrap_or_default(),
            session: a.session.clone().unwrap_or_default(),
            channel: a.channel.clone().unwrap_or_default(),
            outcome: outcome as i32,
        }))
        .await
        .map_err(|s| gw.failed("StreamDecisions", &s))?
        .into_inner();
    // Tells a caller (or a test) that the subscription is in place.
    eprintln!("following decisions at {}", gw.display);
    if gw.format == Format::Table {
        output::text(&tail_row([
            "TIME",
            "NAMESPACE",
            "OUTCOME",
            "PATH",
            "AGENT",
            "CHANNEL",
            "DECISION",
        ]))?;
    }
    let mut seen = 0u64;
    while a.count.is_none_or(|c| seen < c) {
        let Some(e) = stream
            .message()
            .await
            .map_err(|s| gw.failed("StreamDecisions", &s))?
        else {
            break;
        };
        seen += 1;
        match gw.format {
            Format::Json => {
                let event: Json = serde_json::from_str(&e.event_json).unwrap_or(Json::Null);
                output::json_line(&json!({
                    "decision_id": e.decision_id,
                    "namespace": e.namespace,
                    "path": e.path,
                    "outcome": outcome_name(e.outcome),
                    "agent": e.agent,
                    "session": e.session,
                    "channel": e.channel,
                    "timestamp": e.timestamp,
                    "event": event,
                }))?;
            }
            Format::Table => output::text(&tail_row([
                e.timestamp.as_str(),
                e.namespace.as_str(),
                outcome_name(e.outcome),
                e.path.as_str(),
                e.agent.as_str(),
                e.channel.as_str(),
                e.decision_id.as_str(),
            ]))?,
        }
    }
    Ok(())
}

/// One line of `logs tail` on a terminal: fixed-width columns, so that rows printed as they
/// arrive line up.
fn tail_row(cells: [&str; 7]) -> String {
    const WIDTHS: [usize; 6] = [30, 16, 9, 24, 12, 12];
    let mut line = String::new();
    for (cell, w) in cells.iter().zip(WIDTHS) {
        line.push_str(&format!("{cell:<w$}  "));
    }
    line.push_str(cells[6]);
    line
}
