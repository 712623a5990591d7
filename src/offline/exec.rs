//! `portcullis exec --decision PATH [-b BUNDLE]... [-d PATH]... FILE...`, like `opa exec`:
//! evaluate one decision for each input file and print every result in one JSON document.
//!
//! Directories are walked (links are not followed); files ending in `.json`, `.yaml` or `.yml`
//! are inputs, others are skipped, as in OPA. The output is OPA's:
//! `{"result": [{"path": FILE, "result": VALUE}, ...]}` indented by two spaces; an undefined
//! decision is `"error": {"code": "opa_undefined_error", "message": "/P decision was undefined"}`,
//! an input that cannot be read or parsed, or an evaluation that fails, is
//! `"error": {"message": ...}`. `--fail`, `--fail-defined` and `--fail-non-empty` exit 1 with
//! OPA's message when a result matches.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::policy::loader::{BundleOptions, MAX_FILE_BYTES};
use crate::policy::{PolicyOptions, Snapshot, Sources};

/// Flags of `portcullis exec`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExecArgs {
    /// The decision to evaluate, as a path (`/envoy/authz/allow` or `envoy/authz/allow`).
    #[arg(long = "decision", default_value = "system/main")]
    pub decision: String,
    /// OPA bundles: directories or `.tar.gz` archives (repeatable).
    #[arg(short = 'b', long = "bundle")]
    pub bundles: Vec<PathBuf>,
    /// Policy and data files or directories (repeatable).
    #[arg(short = 'd', long = "data")]
    pub data: Vec<PathBuf>,
    /// Also evaluate the input document read from stdin (reported as `--stdin-input`).
    #[arg(short = 'I', long = "stdin-input")]
    pub stdin_input: bool,
    /// Exit 1 when a decision is undefined (or an input fails).
    #[arg(long)]
    pub fail: bool,
    /// Exit 1 when a decision is defined (or an input fails).
    #[arg(long = "fail-defined")]
    pub fail_defined: bool,
    /// Exit 1 when a decision is defined and not an empty array (or an input fails).
    #[arg(long = "fail-non-empty")]
    pub fail_non_empty: bool,
    /// Parse policies as Rego v0.
    #[arg(long = "v0-compatible")]
    pub v0_compatible: bool,
    /// Evaluation time limit per input, in milliseconds.
    #[arg(long = "timeout-ms", default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Input files or directories.
    pub files: Vec<PathBuf>,
}

/// One input's result, in OPA's shape.
#[derive(Debug, serde::Serialize)]
pub struct ExecResult {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ExecError>,
}

impl ExecResult {
    fn failed(path: String, code: Option<&'static str>, message: String) -> Self {
        Self {
            path,
            result: None,
            error: Some(ExecError { code, message }),
        }
    }
}

/// Why an input has no result.
#[derive(Debug, serde::Serialize)]
pub struct ExecError {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
    pub message: String,
}

/// The input files under `paths`, in order; directories are walked, links not followed.
fn input_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    fn walk(path: &Path, out: &mut Vec<PathBuf>, depth: usize) -> Result<(), String> {
        let meta =
            std::fs::symlink_metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if meta.is_dir() {
            if depth > 64 {
                return Err(format!("{}: directories nested too deeply", path.display()));
            }
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| format!("{}: {e}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            entries.sort();
            for e in entries {
                walk(&e, out, depth + 1)?;
            }
        } else if meta.is_file() || depth == 0 {
            out.push(path.to_path_buf());
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in paths {
        walk(p, &mut out, 0)?;
    }
    Ok(out)
}

fn is_input(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e, "json" | "yaml" | "yml"))
}

fn parse_input(text: &str, yaml: bool) -> Result<regorus::Value, String> {
    let json: serde_json::Value = if yaml {
        yaml_serde::from_str(text).map_err(|e| e.to_string())?
    } else {
        serde_json::from_str(text).map_err(|e| e.to_string())?
    };
    Ok(regorus::Value::from(json))
}

fn read_input(path: &Path) -> Result<regorus::Value, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!("file is larger than {MAX_FILE_BYTES} bytes"));
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let text = String::from_utf8(bytes).map_err(|_| "file is not valid UTF-8".to_string())?;
    let yaml = path.extension().is_none_or(|e| e != "json");
    parse_input(&text, yaml)
}

/// Counts of results that `--fail*` count, as OPA counts them.
#[derive(Debug, Default)]
struct Tally {
    failures: usize,
    errors: usize,
}

/// Evaluates the decision for every input; the results and the exit code.
pub fn run(args: &ExecArgs) -> Result<(Vec<ExecResult>, i32), String> {
    let limits = crate::bundle::Limits::default();
    let sources = Sources::read_with(
        &args.data,
        &args.bundles,
        &[],
        &BundleOptions {
            verification: None,
            skip_verify: false,
            limits: &limits,
        },
    )
    .map_err(|e| e.to_string())?;
    let opts = PolicyOptions {
        eval_timeout: Duration::from_millis(args.timeout_ms.max(1)),
        rego_v0: args.v0_compatible,
        ..Default::default()
    };
    let snapshot = Snapshot::build(&sources, &opts, 1).map_err(|e| e.to_string())?;
    let decision = format!("/{}", args.decision.trim_matches('/'));
    let fail_any = args.fail || args.fail_defined || args.fail_non_empty;
    let mut tally = Tally::default();
    let mut results = Vec::new();
    let mut evaluate = |path: String, input: Result<regorus::Value, String>| {
        let input = match input {
            Ok(v) => v,
            Err(message) => {
                if fail_any {
                    tally.errors += 1;
                }
                results.push(ExecResult::failed(path, None, message));
                return;
            }
        };
        match snapshot.eval_path(&decision, Some(input)) {
            Ok(regorus::Value::Undefined) => {
                if args.fail {
                    tally.errors += 1;
                }
                results.push(ExecResult::failed(
                    path,
                    Some("opa_undefined_error"),
                    format!("{decision} decision was undefined"),
                ));
            }
            Ok(value) => {
                let json = serde_json::to_value(&value).unwrap_or(serde_json::Value::Null);
                let non_empty = !matches!(&json, serde_json::Value::Array(a) if a.is_empty());
                if args.fail_defined || (args.fail_non_empty && non_empty) {
                    tally.failures += 1;
                }
                results.push(ExecResult {
                    path,
                    result: Some(json),
                    error: None,
                });
            }
            Err(e) => {
                if fail_any {
                    tally.errors += 1;
                }
                results.push(ExecResult::failed(path, None, e.to_string()));
            }
        }
    };
    if args.stdin_input {
        let mut text = String::new();
        let input = std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .map_err(|e| e.to_string())
            .and_then(|_| {
                if text.trim().is_empty() {
                    Err(
                        "cannot execute on empty input; please enter valid json or yaml when \
                         using the --stdin-input flag"
                            .to_string(),
                    )
                } else {
                    parse_input(
                        &text,
                        serde_json::from_str::<serde::de::IgnoredAny>(&text).is_err(),
                    )
                }
            });
        evaluate("--stdin-input".to_string(), input);
    }
    for file in input_files(&args.files)? {
        if !is_input(&file) {
            continue;
        }
        let input = read_input(&file);
        evaluate(file.display().to_string(), input);
    }
    let code = if fail_any && (tally.failures > 0 || tally.errors > 0) {
        let flag = if args.fail {
            "--fail"
        } else if args.fail_defined {
            "--fail-defined"
        } else {
            "--fail-non-empty"
        };
        eprintln!(
            "exec error: there were {} failures and {} errors counted in the results list, and \
             {flag} is set",
            tally.failures, tally.errors
        );
        1
    } else {
        0
    };
    Ok((results, code))
}

/// Runs `exec`, prints the results, and returns the exit code.
pub fn main(args: &ExecArgs) -> i32 {
    if args.files.is_empty() && !args.stdin_input {
        eprintln!("error: specify at least one input file (or --stdin-input)");
        return 2;
    }
    match run(args) {
        Ok((results, code)) => {
            #[derive(serde::Serialize)]
            struct Document<'a> {
                result: &'a [ExecResult],
            }
            let text = serde_json::to_string_pretty(&Document { result: &results })
                .unwrap_or_else(|_| "{\"result\":[]}".into());
            println!("{text}");
            code
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}
