//! The gateway client commands: `decide`, `policy ls|get|put|rm`, `data get|put|rm`,
//! `logs tail`, `keys create|ls|revoke`, `status`, `token revoke|revocations`. Each one opens a
//! connection, sends one
//! request (or follows one stream) and prints the answer.

use std::io::Read as _;

use serde_json::{Value as Json, json};

use super::CliError;
use super::connect::Gateway;
use super::output::{self, Format};
use crate::gateway::pb::{self, Outcome};

mod data;
mod decide;
mod keys;
mod logs;
mod policy;
mod revoke;
mod status;

pub use data::{DataCommand, data};
pub use decide::{DecideArgs, decide};
pub use keys::{KeysCommand, keys};
pub use logs::{LogsCommand, OutcomeArg, TailArgs, logs};
pub use policy::{PolicyCommand, policy};
pub use revoke::{RevocationsArgs, RevokeArgs, revocations, revoke};
pub use status::{StatusArgs, status};

pub(super) fn ns(n: &Option<String>) -> String {
    n.clone().unwrap_or_default()
}

/// Reads `arg` as inline text, `@FILE` or `-` (stdin).
pub(super) fn read_arg(arg: &str) -> Result<String, CliError> {
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

pub(super) fn parse_json(what: &str, text: &str) -> Result<Json, CliError> {
    serde_json::from_str(text).map_err(|e| CliError::Usage(format!("{what}: invalid JSON: {e}")))
}

pub(super) fn outcome_name(o: i32) -> &'static str {
    match Outcome::try_from(o) {
        Ok(Outcome::Allow) => "allow",
        Ok(Outcome::Deny) => "deny",
        Ok(Outcome::Undefined) => "undefined",
        Ok(Outcome::Error) => "error",
        Ok(Outcome::Other) => "other",
        _ => "unspecified",
    }
}

pub(super) fn value_json(v: &Option<envoy_types::pb::google::protobuf::Value>) -> Json {
    v.as_ref().and_then(pb::value_to_json).unwrap_or(Json::Null)
}

pub(super) fn written(gw: &Gateway, namespace: &str, revision: u64) -> Result<(), CliError> {
    match gw.format {
        Format::Json => output::json_line(&json!({"namespace": namespace, "revision": revision})),
        Format::Table => output::text(&format!("ok: namespace {namespace}, revision {revision}")),
    }
}
