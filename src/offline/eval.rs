//! `portcullis eval [-d PATH]... [-b BUNDLE]... [-i input.json | -I] [-f FORMAT] QUERY`, like
//! `opa eval`.
//!
//! The `json` output is OPA's document: `{"result": [{"expressions": [{"value": ..., "text":
//! ..., "location": {...}}], "bindings": {...}}]}`, or `{}` when the query is undefined (on one
//! line; `pretty` indents it). As in OPA, `raw` prints each result on a line, its expression
//! values separated by spaces (strings bare, anything else as compact JSON); `values` prints
//! each result's expression values as an indented JSON array; `bindings` each result's
//! bindings as an indented JSON object. An undefined query prints nothing in those three.

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
    /// Expression values only, strings bare: for scripts.
    Raw,
    /// Each result's expression values, as a JSON array.
    Values,
    /// Each result's variable bindings, as a JSON object.
    Bindings,
}

/// Flags of `portcullis eval`.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// Policy and data files or directories (repeatable).
    #[arg(short = 'd', long = "data")]
    pub data: Vec<PathBuf>,
    /// OPA bundles: directories or `.tar.gz` archives (repeatable).
    #[arg(short = 'b', long = "bundle")]
    pub bundles: Vec<PathBuf>,
    /// The input document (JSON or YAML).
    #[arg(short = 'i', long = "input", conflicts_with = "stdin_input")]
    pub input: Option<PathBuf>,
    /// Read the input document (JSON or YAML) from stdin.
    #[arg(short = 'I', long = "stdin-input")]
    pub stdin_input: bool,
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
    /// Not supported: regorus has no per-expression profiler; refused with a message.
    #[arg(long = "profile")]
    pub profile: bool,
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
    let limits = crate::bundle::Limits::default();
    let sources = Sources::read_with(
        &args.data,
        &args.bundles,
        &[],
        &crate::policy::loader::BundleOptions {
            verification: None,
            skip_verify: false,
            limits: &limits,
        },
    )?;
    let opts = PolicyOptions {
        eval_timeout: Duration::from_millis(args.timeout_ms.max(1)),
        rego_v0: args.v0_compatible,
        ..Default::default()
    };
    let snapshot = Snapshot::build(&sources, &opts, 1)?;
    let input = match (&args.input, args.stdin_input) {
        (Some(path), _) => Some(read_input(path)?),
        (None, true) => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map_err(|e| {
                EvalToolError::Input {
                    path: PathBuf::from("(stdin)"),
                    message: e.to_string(),
                }
            })?;
            Some(parse_input(std::path::Path::new("(stdin)"), &text, false)?)
        }
        (None, false) => None,
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
    parse_input(path, &text, is_yaml)
}

/// JSON, or YAML when `yaml` (or when the text is not JSON: stdin has no file name).
fn parse_input(
    path: &std::path::Path,
    text: &str,
    yaml: bool,
) -> Result<regorus::Value, EvalToolError> {
    let err = |message: String| EvalToolError::Input {
        path: path.to_path_buf(),
        message,
    };
    let yaml = yaml || serde_json::from_str::<serde::de::IgnoredAny>(text).is_err();
    if yaml {
        let json: serde_json::Value = yaml_serde::from_str(text).map_err(|e| err(e.to_string()))?;
        Ok(regorus::Value::from(json))
    } else {
        regorus::Value::from_json_str(text).map_err(|e| err(e.to_string()))
    }
}

/// The result document in `format`, as printed (with its final newline; empty when a
/// per-result format meets an undefined query).
pub fn render(doc: &serde_json::Value, format: Format) -> String {
    let indented = |v: &serde_json::Value| {
        serde_json::to_string_pretty(v).unwrap_or_else(|_| "null".into()) + "\n"
    };
    let results = doc
        .get("result")
        .and_then(|r| r.as_array())
        .cloned()
        .unwrap_or_default();
    let values = |r: &serde_json::Value| -> Vec<serde_json::Value> {
        r.get("expressions")
            .and_then(|e| e.as_array())
            .map(|e| e.iter().map(|x| x["value"].clone()).collect())
            .unwrap_or_default()
    };
    match format {
        Format::Json => serde_json::to_string(doc).unwrap_or_else(|_| "{}".into()) + "\n",
        Format::Pretty => indented(doc),
        Format::Raw => results
            .iter()
            .map(|r| {
                let line: Vec<String> = values(r)
                    .iter()
                    .map(|v| match v {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect();
                line.join(" ") + "\n"
            })
            .collect(),
        Format::Values => results
            .iter()
            .map(|r| indented(&serde_json::Value::Array(values(r))))
            .collect(),
        Format::Bindings => results
            .iter()
            .map(|r| {
                indented(
                    r.get("bindings")
                        .unwrap_or(&serde_json::Value::Object(Default::default())),
                )
            })
            .collect(),
    }
}

/// Runs `eval`, prints the result, and returns the exit code.
pub fn main(args: &EvalArgs) -> i32 {
    if args.profile {
        eprintln!(
            "error: --profile is not supported: regorus, the engine, records no per-expression \
             or per-rule timings (test --bench times whole test rules)"
        );
        return 2;
    }
    match evaluate(args) {
        Ok(doc) => {
            print!("{}", render(&doc, args.format));
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
            bundles: Vec::new(),
            input,
            stdin_input: false,
            format: Format::Json,
            fail: false,
            fail_defined: false,
            v0_compatible: false,
            timeout_ms: 1000,
            profile: false,
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

    #[test]
    fn formats_print_like_opa() {
        let doc = serde_json::json!({"result": [
            {"expressions": [{"value": "a b", "text": "x"}, {"value": [1, {"k": true}], "text": "y"}],
             "bindings": {"x": "a b"}},
            {"expressions": [{"value": 2, "text": "x"}, {"value": null, "text": "y"}]},
        ]});
        assert_eq!(render(&doc, Format::Raw), "a b [1,{\"k\":true}]\n2 null\n");
        assert_eq!(
            render(&doc, Format::Values),
            "[\n  \"a b\",\n  [\n    1,\n    {\n      \"k\": true\n    }\n  ]\n]\n[\n  2,\n  null\n]\n"
        );
        assert_eq!(
            render(&doc, Format::Bindings),
            "{\n  \"x\": \"a b\"\n}\n{}\n"
        );
        let undefined = serde_json::json!({});
        for f in [Format::Raw, Format::Values, Format::Bindings] {
            assert_eq!(render(&undefined, f), "", "{f:?}");
        }
        assert_eq!(render(&undefined, Format::Json), "{}\n");
    }
}
