//! `portcullis bench eval`: per-decision policy evaluation time, like `opa bench`.
//!
//! The policies are loaded and compiled exactly as the server does, and each evaluation goes
//! through the same path a Check takes ([`Snapshot::eval`]). The input is a JSON document
//! (`-i`) or, with `--case`, the input document the Check path builds from a request case file,
//! so the figure is what a Check spends in the policy.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::authz::input::{self, InputOptions};
use crate::client::RequestSpec;
use crate::policy::{PolicyOptions, Snapshot, Sources};

/// Flags of `bench eval`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchEvalArgs {
    /// Policy and data files or directories (repeatable).
    #[arg(short = 'd', long = "data", required = true)]
    pub data: Vec<PathBuf>,
    /// The input document (JSON).
    #[arg(short = 'i', long = "input", conflicts_with = "case")]
    pub input: Option<PathBuf>,
    /// A request case file (YAML); its Check input document is the input.
    #[arg(long)]
    pub case: Option<PathBuf>,
    /// The engine: `auto` (the bytecode VM where it applies, the default) or `interpreter`.
    #[arg(long, value_enum, default_value = "auto")]
    pub engine: crate::policy::EngineChoice,
    /// Evaluations to time (after as many warm-up evaluations, at most 1000).
    #[arg(long, default_value_t = 10_000)]
    pub count: u32,
    /// The decision, e.g. `data.envoy.authz.allow`.
    pub query: String,
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum EvalBenchError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Policy(#[from] crate::policy::PolicyError),
    #[error("evaluation failed: {0}")]
    Eval(#[from] crate::policy::EvalError),
    #[error("{0}")]
    Input(String),
}

/// The measured figures (nanoseconds).
#[derive(Debug, Clone, serde::Serialize)]
pub struct EvalReport {
    pub query: String,
    /// The engine that evaluated (`vm` or `interpreter`).
    pub engine: &'static str,
    pub count: u32,
    pub result: serde_json::Value,
    pub mean_ns: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
    /// Building the input document from the case (only with `--case`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_build_ns: Option<u64>,
}

/// Runs the benchmark and returns its report.
pub fn measure(args: &BenchEvalArgs) -> Result<EvalReport, EvalBenchError> {
    let path = args
        .query
        .strip_prefix("data.")
        .ok_or_else(|| {
            EvalBenchError::Usage(format!(
                "QUERY must be a data reference such as data.envoy.authz.allow, got {:?}",
                args.query
            ))
        })?
        .replace('.', "/");
    if args.count == 0 {
        return Err(EvalBenchError::Usage("--count must be at least 1".into()));
    }
    let opts = PolicyOptions {
        decision_path: path,
        eval_timeout: Duration::from_secs(10),
        engine: args.engine,
        ..Default::default()
    };
    let snapshot = Snapshot::build(&Sources::read(&args.data, &[])?, &opts, 1)?;
    let mut input_build_ns = None;
    let input = match (&args.input, &args.case) {
        (Some(file), _) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| EvalBenchError::Input(format!("{}: {e}", file.display())))?;
            regorus::Value::from_json_str(&text)
                .map_err(|e| EvalBenchError::Input(format!("{}: {e}", file.display())))?
        }
        (None, Some(case)) => {
            let spec = RequestSpec::load(case).map_err(|e| EvalBenchError::Input(e.to_string()))?;
            let req = spec.to_check_request();
            let opts = InputOptions::default();
            let rounds = args.count.min(1000);
            let start = Instant::now();
            for _ in 0..rounds {
                input::build(&req, &opts).map_err(|e| EvalBenchError::Input(e.to_string()))?;
            }
            input_build_ns = Some((start.elapsed().as_nanos() / u128::from(rounds)) as u64);
            input::build(&req, &opts).map_err(|e| EvalBenchError::Input(e.to_string()))?
        }
        (None, None) => regorus::Value::new_object(),
    };
    let first = snapshot.eval(input.clone())?;
    for _ in 1..args.count.min(1000) {
        snapshot.eval(input.clone())?;
    }
    let mut samples = Vec::with_capacity(args.count as usize);
    for _ in 0..args.count {
        let start = Instant::now();
        let ev = snapshot.eval(input.clone())?;
        samples.push(start.elapsed().as_nanos() as u64);
        std::hint::black_box(ev);
    }
    samples.sort_unstable();
    let pick = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).saturating_sub(1);
        samples.get(i.min(samples.len() - 1)).copied().unwrap_or(0)
    };
    let total: u128 = samples.iter().map(|&s| u128::from(s)).sum();
    Ok(EvalReport {
        query: args.query.clone(),
        engine: snapshot.engine_name(),
        count: args.count,
        result: serde_json::to_value(&first.value).unwrap_or(serde_json::Value::Null),
        mean_ns: (total / samples.len() as u128) as u64,
        p50_ns: pick(0.50),
        p90_ns: pick(0.90),
        p99_ns: pick(0.99),
        max_ns: samples.last().copied().unwrap_or(0),
        input_build_ns,
    })
}

/// Runs the benchmark and prints one JSON line; returns the exit code.
pub fn main(args: &BenchEvalArgs) -> i32 {
    match measure(args) {
        Ok(report) => {
            println!(
                "{}",
                serde_json::to_string(&report).unwrap_or_else(|_| "{}".into())
            );
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            match e {
                EvalBenchError::Usage(_) => 2,
                _ => 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_a_policy() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.rego");
        std::fs::write(&p, "package a\n\nallow if input.x == 1\n").unwrap();
        let i = dir.path().join("input.json");
        std::fs::write(&i, r#"{"x": 1}"#).unwrap();
        let report = measure(&BenchEvalArgs {
            data: vec![p.clone()],
            input: Some(i),
            case: None,
            engine: Default::default(),
            count: 50,
            query: "data.a.allow".into(),
        })
        .unwrap();
        assert_eq!(report.result, serde_json::json!(true));
        assert!(report.p50_ns <= report.p99_ns && report.p99_ns <= report.max_ns);
        assert!(report.mean_ns > 0);
        let err = measure(&BenchEvalArgs {
            data: vec![p],
            input: None,
            case: None,
            engine: Default::default(),
            count: 5,
            query: "allow".into(),
        })
        .unwrap_err();
        assert!(matches!(err, EvalBenchError::Usage(_)));
    }
}
