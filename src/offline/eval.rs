//! `portcullis eval [-d PATH]... [-i input.json] [--format json|pretty] QUERY`, like `opa eval`.
//!
//! The output is OPA's: `{"result": [{"expressions": [{"value": ..., "text": ..., "location":
//! {...}}], "bindings": {...}}]}`, or `{}` when the query is undefined.

use std::path::PathBuf;
use std::time::Duration;

use crate::policy::{PolicyOptions, Snapshot, Sources};

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// One JSON document.
    #[default]
    Json,
    /// Indented JSON.
    Pretty,
}

/// Flags of `portcullis eval`.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// Policy and data files or directories (repeatable).
    #[arg(short = 'd', long = "data")]
    pub data: Vec<PathBuf>,
    /// The input document (JSON or YAML).
    #[arg(short = 'i', long = "input")]
    pub input: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'f', long = "format", value_enum, default_value = "json")]
    pub format: Format,
    /// Exit 1 when the result is undefined.
    #[arg(long)]
    pub fail: bool,
    /// Exit 1 when the result is defined.
    #[arg(long = "fail-defined")]
    pub fail_defined: bool,
    /// Parse policies as Rego v0.
    #[arg(long = "v0-compatible")]
    pub v0_compatible: bool,
    /// Evaluation time limit in milliseconds.
    #[arg(long = "timeout-ms", default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// The Rego query, e.g. `data.envoy.authz.allow`.
    pub query: String,
}

/// Why `eval` failed.
#[derive(Debug, thiserror::Error)]
pub enum EvalToolError {
    #[error("{0}")]
    Policy(#[from] crate::policy::PolicyError),
    #[error("{0}")]
    Eval(#[from] crate::policy::EvalError),
    #[error("{path}: {message}")]
    Input { path: PathBuf, message: String },
}

/// Evaluates the query; returns the OPA-format result document.
pub fn evaluate(args: &EvalArgs) -> Result<serde_json::Value, EvalToolError> {
    let sources = Sources::read(&args.data, &[])?;
    let opts = PolicyOptions {
        eval_timeout: Duration::from_millis(args.timeout_ms.max(1)),
        rego_v0: args.v0_compatible,
        ..Default::default()
    };
    let snapshot = Snapshot::build(&sources, &opts, 1)?;
    let input = match &args.input {
        None => None,
        Some(path) => Some(read_input(path)?),
    };
    let results = snapshot.eval_query(&args.query, input)?;
    serde_json::to_value(&results).map_err(|e| EvalToolError::Input {
        path: PathBuf::from("(result)"),
        message: e.to_string(),
    })
}

fn read_input(path: &PathBuf) -> Result<regorus::Value, EvalToolError> {
    let err = |message: String| EvalToolError::Input {
        path: path.clone(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let is_yaml = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"));
    if is_yaml {
        let json: serde_json::Value =
            yaml_serde::from_str(&text).map_err(|e| err(e.to_string()))?;
        Ok(regorus::Value::from(json))
    } else {
        regorus::Value::from_json_str(&text).map_err(|e| err(e.to_string()))
    }
}

/// Runs `eval`, prints the result, and returns the exit code.
pub fn main(args: &EvalArgs) -> i32 {
    match evaluate(args) {
        Ok(doc) => {
            let text = match args.format {
                Format::Json => serde_json::to_string(&doc),
                Format::Pretty => serde_json::to_string_pretty(&doc),
            }
            .unwrap_or_else(|_| "{}".into());
            println!("{text}");
            let defined = doc
                .get("result")
                .and_then(|r| r.as_array())
                .is_some_and(|r| !r.is_empty());
            if (args.fail && !defined) || (args.fail_defined && defined) {
                1
            } else {
                0
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(dir: &std::path::Path, query: &str, input: Option<PathBuf>) -> EvalArgs {
        EvalArgs {
            data: vec![dir.to_path_buf()],
            input,
            format: Format::Json,
            fail: false,
            fail_defined: false,
            v0_compatible: false,
            timeout_ms: 1000,
            query: query.into(),
        }
    }

    #[test]
    fn results_have_opas_shape() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("p.rego"),
            "package a\n\nallow if input.x == 1\nnames := {n | some n in data.users}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("data.json"), r#"{"users": ["b", "a"]}"#).unwrap();
        let input = dir.path().join("input.json");
        std::fs::write(&input, r#"{"x": 1}"#).unwrap();
        let doc = evaluate(&args(dir.path(), "data.a.allow", Some(input.clone()))).unwrap();
        assert_eq!(doc["result"][0]["expressions"][0]["value"], true);
        assert_eq!(doc["result"][0]["expressions"][0]["text"], "data.a.allow");
        let doc = evaluate(&args(dir.path(), "x := data.a.names", None)).unwrap();
        assert_eq!(
            doc["result"][0]["bindings"]["x"],
            serde_json::json!(["a", "b"])
        );
        // Undefined: no result key at all.
        let doc = evaluate(&args(dir.path(), "data.a.allow", None)).unwrap();
        assert_eq!(doc, serde_json::json!({}));
        // A query that does not parse is an error.
        assert!(evaluate(&args(dir.path(), "data.a.allow ==", None)).is_err());
    }
}
