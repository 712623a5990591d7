//! `portcullis test [--coverage] [-v] [--run REGEX] PATH...`, like `opa test`.
//!
//! Every rule whose name starts with `test_` (and that takes no arguments) is a test: it passes
//! when it evaluates to `true`, fails when it is `false` or undefined, and errors when its
//! evaluation fails. Policies and data load as the server loads them, with the same extension
//! builtins. The exit code is 0 when every test passes, 1 otherwise (and 2 for usage errors).
//! `--coverage` prints, per file, the share of evaluable lines the tests reached (from regorus'
//! coverage report) and the total.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use regorus::Engine;
use regorus::unstable::{Rule, RuleHead};

use crate::policy::Sources;

/// Flags of `portcullis test`.
#[derive(Debug, Clone, clap::Args)]
pub struct TestArgs {
    /// Report coverage.
    #[arg(short = 'c', long)]
    pub coverage: bool,
    /// List every test, not only failures.
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Only run tests whose full name (`data.pkg.test_x`) matches this regular expression.
    #[arg(short = 'r', long = "run")]
    pub run: Option<String>,
    /// Parse policies as Rego v0.
    #[arg(long = "v0-compatible")]
    pub v0_compatible: bool,
    /// Policy and data files or directories.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

/// How one test ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail,
    Error(String),
}

/// One test's result.
#[derive(Debug, Clone)]
pub struct TestResult {
    /// `data.package.test_name`
    pub name: String,
    pub outcome: Outcome,
    pub duration: Duration,
}

/// Line coverage of one file.
#[derive(Debug, Clone)]
pub struct FileCoverage {
    pub path: String,
    pub covered: usize,
    pub not_covered: usize,
}

/// Everything a run produced.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub results: Vec<TestResult>,
    pub coverage: Vec<FileCoverage>,
}

impl Report {
    /// Whether every test passed (and there was at least one).
    pub fn passed(&self) -> bool {
        !self.results.is_empty() && self.results.iter().all(|r| r.outcome == Outcome::Pass)
    }

    /// Covered share of evaluable lines over all files, in percent.
    pub fn coverage_percent(&self) -> f64 {
        let covered: usize = self.coverage.iter().map(|f| f.covered).sum();
        let total: usize = self
            .coverage
            .iter()
            .map(|f| f.covered + f.not_covered)
            .sum();
        if total == 0 {
            100.0
        } else {
            covered as f64 * 100.0 / total as f64
        }
    }
}

/// Why the tests could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum TestToolError {
    #[error("{0}")]
    Policy(#[from] crate::policy::PolicyError),
    #[error("{0}")]
    Engine(String),
    #[error("--run: {0}")]
    Filter(String),
}

/// Loads the paths and runs every test.
pub fn run_tests(args: &TestArgs) -> Result<Report, TestToolError> {
    let filter = match &args.run {
        None => None,
        Some(re) => Some(regex::Regex::new(re).map_err(|e| TestToolError::Filter(e.to_string()))?),
    };
    let sources = Sources::read(&args.paths, &[])?;
    let mut engine = Engine::new();
    engine.set_rego_v0(args.v0_compatible);
    crate::policy::builtins::register(&mut engine)
        .map_err(|e| TestToolError::Engine(e.to_string()))?;
    for (name, text) in &sources.modules {
        engine.add_policy(name.clone(), text.clone()).map_err(|e| {
            crate::policy::PolicyError::Compile(crate::policy::with_v0_hint(
                e.to_string(),
                args.v0_compatible,
            ))
        })?;
    }
    engine
        .add_data(sources.data_value())
        .map_err(|e| TestToolError::Engine(format!("data: {e}")))?;
    let names = test_names(&engine)?;
    engine.set_enable_coverage(args.coverage);
    let mut report = Report::default();
    for name in names {
        if filter.as_ref().is_some_and(|f| !f.is_match(&name)) {
            continue;
        }
        let start = Instant::now();
        let outcome = match engine.eval_rule(name.clone()) {
            Ok(regorus::Value::Bool(true)) => Outcome::Pass,
            Ok(_) => Outcome::Fail,
            Err(e) => Outcome::Error(e.to_string()),
        };
        report.results.push(TestResult {
            name,
            outcome,
            duration: start.elapsed(),
        });
    }
    if args.coverage {
        let cov = engine
            .get_coverage_report()
            .map_err(|e| TestToolError::Engine(e.to_string()))?;
        report.coverage = cov
            .files
            .iter()
            .map(|f| FileCoverage {
                path: f.path.clone(),
                covered: f.covered.len(),
                not_covered: f.not_covered.len(),
            })
            .collect();
    }
    Ok(report)
}

/// `data.<package>.test_*` for every argument-less rule named `test_*`, in file order.
fn test_names(engine: &Engine) -> Result<Vec<String>, TestToolError> {
    let mut names = Vec::new();
    let mut engine = engine.clone();
    for module in engine.get_modules().iter() {
        let package = regorus::utils::get_path_string(&module.package.refr, Some("data"))
            .map_err(|e| TestToolError::Engine(e.to_string()))?;
        for rule in &module.policy {
            let Rule::Spec { head, .. } = rule.as_ref() else {
                continue;
            };
            let refr = match head {
                RuleHead::Compr { refr, .. } | RuleHead::Set { refr, .. } => refr,
                RuleHead::Func { refr, args, .. } if args.is_empty() => refr,
                RuleHead::Func { .. } => continue,
            };
            let Ok(rule_name) = regorus::utils::get_path_string(refr, None) else {
                continue;
            };
            if rule_name.starts_with("test_") {
                let full = format!("{package}.{rule_name}");
                if !names.contains(&full) {
                    names.push(full);
                }
            }
        }
    }
    Ok(names)
}

/// Runs the tests, prints the results like `opa test`, and returns the exit code.
pub fn main(args: &TestArgs) -> i32 {
    let report = match run_tests(args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    for r in &report.results {
        match &r.outcome {
            Outcome::Pass if args.verbose => println!("{}: PASS ({:?})", r.name, r.duration),
            Outcome::Pass => {}
            Outcome::Fail => println!("{}: FAIL ({:?})", r.name, r.duration),
            Outcome::Error(e) => println!("{}: ERROR ({:?})\n  {e}", r.name, r.duration),
        }
    }
    let passed = report
        .results
        .iter()
        .filter(|r| r.outcome == Outcome::Pass)
        .count();
    let total = report.results.len();
    println!("{}", "-".repeat(80));
    if total == 0 {
        println!("no tests found");
    } else if passed == total {
        println!("PASS: {passed}/{total}");
    } else {
        println!("PASS: {passed}/{total}");
        println!("FAIL: {}/{total}", total - passed);
    }
    if args.coverage {
        for f in &report.coverage {
            let lines = f.covered + f.not_covered;
            let pct = if lines == 0 {
                100.0
            } else {
                f.covered as f64 * 100.0 / lines as f64
            };
            println!("{}: {pct:.1}% ({}/{lines} lines)", f.path, f.covered);
        }
        println!("coverage: {:.1}%", report.coverage_percent());
    }
    if report.passed() { 0 } else { 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(dir: &std::path::Path) -> TestArgs {
        TestArgs {
            coverage: true,
            verbose: false,
            run: None,
            v0_compatible: false,
            paths: vec![dir.to_path_buf()],
        }
    }

    #[test]
    fn passes_failures_and_errors_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("p.rego"),
            "package p\n\nallow if input.x == 1\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("p_test.rego"),
            "package p_test\n\nimport data.p\n\n\
             test_allow if p.allow with input as {\"x\": 1}\n\
             test_deny if not p.allow with input as {\"x\": 2}\n\
             test_wrong if p.allow with input as {\"x\": 3}\n\
             test_error if 1 / 0 == 1\n\
             test_fn(a) := a\n\
             helper := 1\n",
        )
        .unwrap();
        let report = run_tests(&args(dir.path())).unwrap();
        let outcome = |n: &str| {
            report
                .results
                .iter()
                .find(|r| r.name == format!("data.p_test.{n}"))
                .map(|r| r.outcome.clone())
        };
        assert_eq!(outcome("test_allow"), Some(Outcome::Pass));
        assert_eq!(outcome("test_deny"), Some(Outcome::Pass));
        assert_eq!(outcome("test_wrong"), Some(Outcome::Fail));
        assert!(matches!(
            outcome("test_error"),
            Some(Outcome::Error(_)) | Some(Outcome::Fail)
        ));
        assert_eq!(outcome("test_fn"), None);
        assert_eq!(report.results.len(), 4);
        assert!(!report.passed());
        assert!(report.coverage_percent() > 0.0 && report.coverage_percent() <= 100.0);
        let mut only = args(dir.path());
        only.run = Some("test_allow$".into());
        let report = run_tests(&only).unwrap();
        assert_eq!(report.results.len(), 1);
        assert!(report.passed());
    }
}
