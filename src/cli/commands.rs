//! The gateway client commands: `decide`, `policy ls|get|put|rm`, `data get|put|rm`,
//! `logs tail`, `keys create|ls|revoke`, `status`. Each one opens a connection, sends one
//! request (or follows one stream) and prints the answer.

use std::io::Read as _;
use std::path::PathBuf;

use serde_json::{Value as Json, json};

use super::CliError;
use super::connect::{Gateway, GatewayArgs};
use super::output::{self, Format};
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
    #[arg(long)]
    pub agent: Option<String>,
    #[arg(long)]
    pub session: Option<String>,
    #[arg(long)]
    pub channel: Option<String>,
    #[command(flatten)]
    pub gateway: GatewayArgs,
}

/// `portcullis policy`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum PolicyCommand {
    /// List the modules of a namespace.
    Ls {
        #[arg(long, short = 'n')]
        namespace: Option<String>,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Print one module.
    Get {
        id: String,
        #[arg(long, short = 'n')]
        namespace: Option<String>,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Add or replace a module (compiled before it serves) from FILE, or - for stdin.
    Put {
        id: String,
        file: PathBuf,
        #[arg(long, short = 'n')]
        namespace: Option<String>,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Remove a module written through the gateway.
    Rm {
        id: String,
        #[arg(long, short = 'n')]
        namespace: Option<String>,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
}

/// `portcullis data`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum DataCommand {
    /// Print the document at PATH (slash-separated; empty: all of it).
    Get {
        #[arg(default_value = "")]
        path: String,
        #[arg(long, short = 'n')]
        namespace: Option<String>,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Set the document at PATH to VALUE (JSON, @FILE, or - for stdin).
    Put {
        path: String,
        value: String,
        #[arg(long, short = 'n')]
        namespace: Option<String>,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Remove the document at PATH.
    Rm {
        path: String,
        #[arg(long, short = 'n')]
        namespace: Option<String>,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
}

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
    #[arg(long)]
    pub agent: Option<String>,
    #[arg(long)]
    pub session: Option<String>,
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
    /// List API keys (never their secrets).
    Ls {
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Revoke an API key.
    Revoke {
        id: String,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
}

/// `portcullis status`.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub gateway: GatewayArgs,
}

fn ns(n: &Option<String>) -> String {
    n.clone().unwrap_or_default()
}

/// Reads `arg` as inline text, `@FILE` or `-` (stdin).
fn read_arg(arg: &str) -> Result<String, CliError> {
    if arg == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| CliError::Usage(format!("stdin: {e}")))?;
        return Ok(s);
    }
    match arg.strip_prefix('@') {
        Some(path) => {
            std::fs::read_to_string(path).map_err(|e| CliError::Usage(format!("{path}: {e}")))
        }
        None => Ok(arg.to_string()),
    }
}

fn parse_json(what: &str, text: &str) -> Result<Json, CliError> {
    serde_json::from_str(text).map_err(|e| CliError::Usage(format!("{what}: invalid JSON: {e}")))
}

fn outcome_name(o: i32) -> &'static str {
    match Outcome::try_from(o) {
        Ok(Outcome::Allow) => "allow",
        Ok(Outcome::Deny) => "deny",
        Ok(Outcome::Undefined) => "undefined",
        Ok(Outcome::Error) => "error",
        Ok(Outcome::Other) => "other",
        _ => "unspecified",
    }
}

fn value_json(v: &Option<envoy_types::pb::google::protobuf::Value>) -> Json {
    v.as_ref().and_then(pb::value_to_json).unwrap_or(Json::Null)
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

fn policy_client(
    gw: &Gateway,
) -> pb::policy_service_client::PolicyServiceClient<super::connect::Transport> {
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

fn written(gw: &Gateway, namespace: &str, revision: u64) -> Result<(), CliError> {
    match gw.format {
        Format::Json => output::json_line(&json!({"namespace": namespace, "revision": revision})),
        Format::Table => output::text(&format!("ok: namespace {namespace}, revision {revision}")),
    }
}

fn data_client(
    gw: &Gateway,
) -> pb::data_service_client::DataServiceClient<super::connect::Transport> {
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
                })).collect::<Vec<_>>()})),
                Format::Table => output::text(&output::table(
                    &["ID", "SUBJECT", "SCOPES", "EXPIRES", "REVOKED"],
                    &r.keys
                        .iter()
                        .map(|k| {
                            vec![
                                k.id.clone(),
                                k.subject.clone(),
                                k.scopes.join(","),
                                k.expires_at.to_string(),
                                k.revoked.to_string(),
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
