//! `portcullis test [--coverage] [--threshold PCT] [-v] [--run REGEX] [--bench] [-f json]
//! PATH...`, like `opa test`.
//!
//! Every rule whose name starts with `test_` (and that takes no arguments) is a test: it passes
//! when it evaluates to `true`, fails when it is `false` or undefined, and errors when its
//! evaluation fails. Policies and data load as the server loads them, with the same extension
//! builtins. Exit codes are OPA's: 0 when every test passes, 2 when one fails or errors or the
//! coverage is under `--threshold`, 1 when the policies cannot be loaded or no test was found
//! (OPA exits 0 then), 2 for usage errors.
//!
//! `--coverage` reports, per file, the share of evaluable lines the tests reached (from regorus'
//! coverage report) and the total: as text, or with `-f json` as OPA's coverage report.
//! `-f json` prints OPA's test report (a JSON array, one object per test). `--bench` runs each
//! passing test repeatedly for about a second and reports the time per run, as OPA's `--bench`
//! does (with `-f json`, each object carries OPA's `benchmark_result`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use regorus::Engine;
use regorus::unstable::{Rule, RuleHead};

use crate::policy::Sources;

/// Output format of `test`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum TestFormat {
    /// One line per failing test (every test with `-v`) and a summary.
    #[default]
    Pretty,
    /// OPA's JSON test report (or, with `--coverage`, OPA's coverage report).
    Json,
}

/// Flags of `portcullis test`.
#[derive(Debug, Clone, clap::Args)]
pub struct TestArgs {
    /// Report coverage.
    #[arg(short = 'c', long)]
    pub coverage: bool,
    /// With coverage: exit 2 when the coverage (in percent, 0 to 100) is under this; a value
    /// above 0 turns `--coverage` on.
    #[arg(long = "threshold", default_value_t = 0.0)]
    pub threshold: f64,
    /// Output format.
    #[arg(short = 'f', long = "format", value_enum, default_value = "pretty")]
    pub format: TestFormat,
    /// Benchmark each passing test: run it repeatedly for about a second and report ns/op.
    #[arg(long = "bench")]
    pub bench: bool,
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

/// Where a test rule is defined.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TestLocation {
    pub file: String,
    pub row: u32,
    pub col: u32,
}

/// One test: its full name, package, rule name and location.
#[derive(Debug, Clone)]
pub struct TestCase {
    /// `data.package.test_name`
    pub name: String,
    /// `data.package`
    pub package: String,
    /// `test_name`
    pub rule: String,
    pub location: TestLocation,
}

/// A benchmark of one test: `n` runs took `total`.
#[derive(Debug, Clone, Copy)]
pub struct Benchmark {
    pub n: u64,
    pub total: Duration,
}

impl Benchmark {
    /// Nanoseconds per run.
    pub fn ns_per_op(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.total.as_nanos() as f64 / self.n as f64
        }
    }
}

/// One test's result.
#[derive(Debug, Clone)]
pub struct TestResult {
    /// `data.package.test_name`
    pub name: String,
    pub case: TestCase,
    pub outcome: Outcome,
    pub duration: Duration,
    pub bench: Option<Benchmark>,
}

/// Line coverage of one file.
#[derive(Debug, Clone)]
pub struct FileCoverage {
    pub path: String,
    pub covered: usize,
    pub not_covered: usize,
    pub covered_lines: Vec<u32>,
    pub not_covered_lines: Vec<u32>,
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
    #[error("{0}")]
    Usage(String),
}

/// How long a benchmark runs each test, as Go's default `-benchtime`.
const BENCH_TIME: Duration = Duration::from_secs(1);

/// Runs `f` repeatedly, as Go's benchmarks do: more runs each round until they take
/// [`BENCH_TIME`].
fn benchmark(mut f: impl FnMut()) -> Benchmark {
    let mut n: u64 = 1;
    loop {
        let start = Instant::now();
        for _ in 0..n {
            f();
        }
        let total = start.elapsed();
        if total >= BENCH_TIME || n >= 1_000_000_000 {
            return Benchmark { n, total };
        }
        let per = (total.as_nanos() as f64 / n as f64).max(1.0);
        let wanted = (BENCH_TIME.as_nanos() as f64 / per * 1.2) as u64;
        n = wanted
            .min(n.saturating_mul(100))
            .max(n + 1)
            .min(1_000_000_000);
    }
}

/// Loads the paths and runs every test.
pub fn run_tests(args: &TestArgs) -> Result<Report, TestToolError> {
    if !(0.0..=100.0).contains(&args.threshold) {
        return Err(TestToolError::Usage(
            "Code coverage threshold must be between 0 and 100".into(),
        ));
    }
    let coverage = args.coverage || args.threshold > 0.0;
    if coverage && args.bench {
        return Err(TestToolError::Usage(
            "coverage reporting is not supported when benchmarking tests".into(),
        ));
    }
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
    let cases = test_cases(&engine)?;
    engine.set_enable_coverage(coverage);
    let mut report = Report::default();
    for case in cases {
        if filter.as_ref().is_some_and(|f| !f.is_match(&case.name)) {
            continue;
        }
        let name = case.name.clone();
        let start = Instant::now();
        let outcome = match engine.eval_rule(name.clone()) {
            Ok(regorus::Value::Bool(true)) => Outcome::Pass,
            Ok(_) => Outcome::Fail,
            Err(e) => Outcome::Error(e.to_string()),
        };
        let duration = start.elapsed();
        let bench = (args.bench && outcome == Outcome::Pass).then(|| {
            benchmark(|| {
                let _ = engine.eval_rule(name.clone());
            })
        });
        report.results.push(TestResult {
            name,
            case,
            outcome,
            duration,
            bench,
        });
    }
    if coverage {
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
                covered_lines: f.covered.iter().copied().collect(),
                not_covered_lines: f.not_covered.iter().copied().collect(),
            })
            .collect();
    }
    Ok(report)
}

/// Every argument-less rule named `test_*` (`data.<package>.test_*`), in file order.
fn test_cases(engine: &Engine) -> Result<Vec<TestCase>, TestToolError> {
    let mut names: Vec<TestCase> = Vec::new();
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
                if !names.iter().any(|c| c.name == full) {
                    let span = rule.span();
                    names.push(TestCase {
                        name: full,
                        package: package.clone(),
                        rule: rule_name,
                        location: TestLocation {
                            file: span.source.file().to_string(),
                            row: span.line,
                            col: span.col,
                        },
                    });
                }
            }
        }
    }
    Ok(names)
}

/// OPA's JSON report of one test.
#[derive(serde::Serialize)]
struct JsonResult<'a> {
    location: &'a TestLocation,
    package: &'a str,
    name: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    fail: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<JsonError<'a>>,
    /// Nanoseconds.
    duration: u128,
    #[serde(skip_serializing_if = "Option::is_none")]
    benchmark_result: Option<JsonBenchmark>,
}

#[derive(serde::Serialize)]
struct JsonError<'a> {
    message: &'a str,
}

/// Go's `testing.BenchmarkResult`, as OPA prints it; memory figures are not measured (0).
#[derive(serde::Serialize)]
#[allow(non_snake_case)]
struct JsonBenchmark {
    N: u64,
    /// Nanoseconds in all.
    T: u128,
    Bytes: u64,
    MemAllocs: u64,
    MemBytes: u64,
    Extra: serde_json::Map<String, serde_json::Value>,
}

/// The JSON test report: an array with one object per test, as `opa test -f json` prints it.
pub fn json_report(report: &Report) -> String {
    let results: Vec<JsonResult<'_>> = report
        .results
        .iter()
        .map(|r| JsonResult {
            location: &r.case.location,
            package: &r.case.package,
            name: &r.case.rule,
            fail: r.outcome == Outcome::Fail,
            error: match &r.outcome {
                Outcome::Error(message) => Some(JsonError { message }),
                _ => None,
            },
            duration: r.duration.as_nanos(),
            benchmark_result: r.bench.map(|b| JsonBenchmark {
                N: b.n,
                T: b.total.as_nanos(),
                Bytes: 0,
                MemAllocs: 0,
                MemBytes: 0,
                Extra: serde_json::Map::new(),
            }),
        })
        .collect();
    serde_json::to_string_pretty(&results).unwrap_or_else(|_| "[]".into())
}

/// Consecutive lines as OPA's `{"start": {"row"}, "end": {"row"}}` ranges.
fn ranges(lines: &[u32]) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut iter = lines.iter().copied();
    let Some(mut start) = iter.next() else {
        return out;
    };
    let mut end = start;
    for line in iter {
        if line == end + 1 {
            end = line;
        } else {
            out.push(serde_json::json!({"start": {"row": start}, "end": {"row": end}}));
            start = line;
            end = line;
        }
    }
    out.push(serde_json::json!({"start": {"row": start}, "end": {"row": end}}));
    out
}

/// Percent rounded to two decimals, as OPA reports it.
fn percent(covered: usize, not_covered: usize) -> f64 {
    let total = covered + not_covered;
    if total == 0 {
        return 100.0;
    }
    (covered as f64 * 10_000.0 / total as f64).round() / 100.0
}

/// OPA's JSON coverage report.
pub fn coverage_report(report: &Report) -> String {
    let mut files = serde_json::Map::new();
    for f in &report.coverage {
        let mut file = serde_json::Map::new();
        if !f.covered_lines.is_empty() {
            file.insert("covered".into(), ranges(&f.covered_lines).into());
        }
        if !f.not_covered_lines.is_empty() {
            file.insert("not_covered".into(), ranges(&f.not_covered_lines).into());
        }
        file.insert("covered_lines".into(), f.covered.into());
        file.insert("not_covered_lines".into(), f.not_covered.into());
        file.insert("coverage".into(), percent(f.covered, f.not_covered).into());
        files.insert(f.path.clone(), file.into());
    }
    let covered: usize = report.coverage.iter().map(|f| f.covered).sum();
    let not_covered: usize = report.coverage.iter().map(|f| f.not_covered).sum();
    let doc = serde_json::json!({
        "files": files,
        "covered_lines": covered,
        "not_covered_lines": not_covered,
        "coverage": percent(covered, not_covered),
    });
    serde_json::to_string_pretty(&doc).unwrap_or_else(|_| "{}".into())
}

/// A time per run as Go prints benchmark figures (`   12345 ns/op`).
fn ns_per_op(ns: f64) -> String {
    if ns == 0.0 || ns >= 999.95 {
        format!("{ns:10.0} ns/op")
    } else if ns >= 99.995 {
        format!("{ns:12.1} ns/op")
    } else if ns >= 9.9995 {
        format!("{ns:13.2} ns/op")
    } else {
        format!("{ns:14.3} ns/op")
    }
}

fn print_pretty(args: &TestArgs, report: &Report) {
    let mut last_file = None;
    let mut dirty = false;
    for r in &report.results {
        if let (Outcome::Pass, Some(b)) = (&r.outcome, r.bench) {
            println!("{}\t{:8}\t{}", r.name, b.n, ns_per_op(b.ns_per_op()));
            dirty = true;
            continue;
        }
        if r.outcome == Outcome::Pass && !args.verbose {
            continue;
        }
        let file = &r.case.location.file;
        if last_file.is_some_and(|f| f != file) {
            println!();
        }
        println!("{file}:{}:", r.case.location.row);
        last_file = Some(file);
        dirty = true;
        match &r.outcome {
            Outcome::Pass => println!("{}: PASS ({:?})", r.name, r.duration),
            Outcome::Fail => println!("{}: FAIL ({:?})", r.name, r.duration),
            Outcome::Error(e) => println!("{}: ERROR ({:?})\n  {e}", r.name, r.duration),
        }
    }
    let count = |f: fn(&Outcome) -> bool| report.results.iter().filter(|r| f(&r.outcome)).count();
    let passed = count(|o| *o == Outcome::Pass);
    let failed = count(|o| *o == Outcome::Fail);
    let errors = count(|o| matches!(o, Outcome::Error(_)));
    let total = report.results.len();
    if dirty || total == 0 {
        println!("{}", "-".repeat(80));
    }
    if total == 0 {
        println!("no tests found");
    }
    if passed > 0 {
        println!("PASS: {passed}/{total}");
    }
    if failed > 0 {
        println!("FAIL: {failed}/{total}");
    }
    if errors > 0 {
        println!("ERROR: {errors}/{total}");
    }
    if !report.coverage.is_empty() {
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
}

/// Runs the tests, prints the results like `opa test`, and returns the exit code.
pub fn main(args: &TestArgs) -> i32 {
    let report = match run_tests(args) {
        Ok(r) => r,
        Err(TestToolError::Usage(message)) => {
            eprintln!("{message}");
            return 1;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let coverage = args.coverage || args.threshold > 0.0;
    match (args.format, coverage) {
        (TestFormat::Json, true) => println!("{}", coverage_report(&report)),
        (TestFormat::Json, false) => println!("{}", json_report(&report)),
        (TestFormat::Pretty, _) => print_pretty(args, &report),
    }
    if report.results.is_empty() {
        return 1;
    }
    if !report.passed() {
        return 2;
    }
    if coverage {
        let got = percent(
            report.coverage.iter().map(|f| f.covered).sum(),
            report.coverage.iter().map(|f| f.not_covered).sum(),
        );
        if got < args.threshold {
            eprintln!(
                "Code coverage threshold not met: got {got:.2} instead of {:.2}",
                args.threshold
            );
            return 2;
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(dir: &std::path::Path) -> TestArgs {
        TestArgs {
            coverage: true,
            threshold: 0.0,
            format: TestFormat::Pretty,
            bench: false,
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
