//! One compiled revision of the policies and data, and how it is evaluated.

use std::cell::RefCell;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use regorus::{Engine, Value};

use crate::bundle::{self, Bundle};

use super::*;

/// How the decision is evaluated.
#[derive(Debug, Clone)]
enum Entry {
    /// A complete rule: the fast `eval_rule` path.
    Rule(String),
    /// Any other document (a package, partial or ref-head rules, data, an array element): the
    /// reference as a query.
    Reference(String),
    /// The deprecated `query`: the first expression of its only result.
    Body(String),
}

/// The result of one evaluation.
#[derive(Debug)]
pub struct Evaluation {
    pub value: Value,
    /// Output of Rego `print()` calls.
    pub prints: Vec<String>,
    pub elapsed: Duration,
}

static NEXT_SNAPSHOT_ID: AtomicU64 = AtomicU64::new(1);

/// The stack of threads that evaluate policies: regorus recurses over nested documents and rule
/// calls, and a deep input must fail as an error, not overflow a 2 MiB stack.
pub const EVAL_STACK_BYTES: usize = 16 * 1024 * 1024;

/// The memory bound when none is configured and no cgroup limit is found.
pub const DEFAULT_MEMORY_LIMIT: u64 = 2 * 1024 * 1024 * 1024;

/// Sets the process-wide memory bound regorus checks during evaluation (`None`: off). It
/// counts what regorus' allocator (the binary's global allocator) has handed out.
pub fn set_memory_limit(limit: Option<u64>) {
    regorus::set_global_memory_limit(limit);
}

/// Three quarters of the cgroup v2 (`memory.max`) or v1 (`memory.limit_in_bytes`) limit, else
/// [`DEFAULT_MEMORY_LIMIT`].
pub fn default_memory_limit() -> u64 {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
    };
    read("/sys/fs/cgroup/memory.max")
        .or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
        .filter(|&n| n > 0 && n < (1 << 50))
        .map_or(DEFAULT_MEMORY_LIMIT, |n| n / 4 * 3)
}

/// Which revision of one bundle a snapshot was built with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleRevision {
    pub name: String,
    /// The manifest's `revision` (may be empty).
    pub revision: String,
    pub roots: Vec<String>,
    /// Whether its signature was verified.
    pub verified: bool,
}

/// One compiled revision of the policies and data.
pub struct Snapshot {
    id: u64,
    revision: u64,
    bundles: Vec<BundleRevision>,
    entry: Entry,
    /// Whether any package, rule or data lies on the decision reference.
    defined: bool,
    /// Where the rules are ([`Snapshot::is_decision`]).
    rule_paths: recursion::RulePaths,
    /// The data document (shared, not copied).
    data: Value,
    prototype: Mutex<Engine>,
    modules: Vec<(String, String)>,
    loaded_at: std::time::SystemTime,
    eval_timeout: Duration,
    /// The decision rule compiled for the VM, with [`EngineChoice::Auto`].
    vm: Option<vm::VmPolicy>,
    /// The labelled rules the decision depends on ([`super::labels`]).
    labels: Option<labels::RuleLabels>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("revision", &self.revision)
            .field("bundles", &self.bundles)
            .field("entry", &self.entry)
            .field("modules", &self.modules.len())
            .finish()
    }
}

thread_local! {
    /// This thread's engine for the snapshot it last evaluated.
    static ENGINE: RefCell<Option<(u64, Engine)>> = const { RefCell::new(None) };
}

impl Snapshot {
    /// Parses and compiles `sources` (and the bundles they hold). Errors carry `file:line:col`.
    pub fn build(
        sources: &Sources,
        opts: &PolicyOptions,
        revision: u64,
    ) -> Result<Self, PolicyError> {
        Self::build_with(sources, &[], opts, revision)
    }

    /// Compiles the local `sources` together with downloaded `remote` bundles. Either everything
    /// compiles and every bundle stays within its roots, or this fails and nothing changes. A
    /// panic inside regorus while compiling fails the build, not the caller.
    pub fn build_with(
        sources: &Sources,
        remote: &[Arc<Bundle>],
        opts: &PolicyOptions,
        revision: u64,
    ) -> Result<Self, PolicyError> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Self::build_inner(sources, remote, opts, revision)
        }))
        .unwrap_or_else(|_| {
            tracing::error!("the policy compiler panicked");
            Err(PolicyError::Compile(
                "internal error in the policy compiler".into(),
            ))
        })
    }

    fn build_inner(
        sources: &Sources,
        remote: &[Arc<Bundle>],
        opts: &PolicyOptions,
        revision: u64,
    ) -> Result<Self, PolicyError> {
        let bundles: Vec<&Bundle> = sources
            .bundles
            .iter()
            .chain(remote.iter().map(|b| b.as_ref()))
            .collect();
        roots::check(sources, &bundles)?;
        let mut engine = Engine::new();
        engine.set_rego_v0(opts.rego_v0);
        engine.set_gather_prints(true);
        // As in OPA, a failing builtin call (`to_number("x")`) is undefined rather than an
        // evaluation error that Envoy's failure_mode_allow could turn into a pass.
        engine.set_strict_builtin_errors(false);
        engine.set_execution_timer_config(regorus::utils::limits::ExecutionTimerConfig {
            limit: opts.eval_timeout,
            check_interval: NonZeroU32::MIN.saturating_add(63),
        });
        builtins::register(&mut engine).map_err(|e| PolicyError::Engine(e.to_string()))?;
        let mut modules = sources.modules.clone();
        for (name, text) in &sources.modules {
            let package = engine
                .add_policy(name.clone(), text.clone())
                .map_err(|e| PolicyError::Compile(with_v0_hint(e.to_string(), opts.rego_v0)))?;
            let path = bundle::package_path(&package);
            if let Some(b) = bundles
                .iter()
                .find(|b| bundle::manifest::roots_contain(&b.roots(), &path))
            {
                return Err(PolicyError::bundle(
                    &b.name,
                    format!("{name}: package {package} lies within the bundle's roots"),
                ));
            }
        }
        let mut data = sources.data.clone();
        for b in &bundles {
            let roots = b.roots();
            for module in &b.modules {
                engine.set_rego_v0(module.rego_v0.unwrap_or(opts.rego_v0));
                let package = engine
                    .add_policy(module.name.clone(), module.text.clone())
                    .map_err(|e| {
                        PolicyError::Compile(with_v0_hint(
                            e.to_string(),
                            module.rego_v0.unwrap_or(opts.rego_v0),
                        ))
                    })?;
                let path = bundle::package_path(&package);
                if !bundle::manifest::roots_contain(&roots, &path) {
                    return Err(PolicyError::bundle(
                        &b.name,
                        format!(
                            "{}: manifest roots {roots:?} do not permit package {package}",
                            module.path
                        ),
                    ));
                }
                modules.push((module.name.clone(), module.text.clone()));
            }
            let mut trail = Vec::new();
            loader::merge_objects(&mut data, b.data.clone(), &mut trail).map_err(|at| {
                PolicyError::bundle(
                    &b.name,
                    format!("data.{} is also set outside the bundle", at.join(".")),
                )
            })?;
        }
        engine.set_rego_v0(opts.rego_v0);
        let rule_paths = recursion::check(engine.get_modules()).map_err(PolicyError::Compile)?;
        engine
            .add_data(Value::from(serde_json::Value::Object(data)))
            .map_err(|e| PolicyError::Engine(format!("data: {e}")))?;
        let (entry, defined) = resolve_entry(&mut engine, opts)?;
        let entry_node = match &entry {
            Entry::Rule(rule) => rule.clone(),
            Entry::Reference(_) => DataRef::parse(&opts.decision_path).dotted_prefix(),
            Entry::Body(_) => "data".to_string(),
        };
        let labels = labels::RuleLabels::find(engine.get_modules(), &rule_paths, &entry_node)
            .map_err(PolicyError::Compile)?;
        let vm = match (&entry, opts.engine) {
            (Entry::Rule(rule), EngineChoice::Auto) => {
                match vm::VmPolicy::compile(&mut engine, rule) {
                    Ok(vm) => Some(vm.with_time_limit(opts.eval_timeout)),
                    Err(e) => {
                        tracing::info!(reason = %e, "the decision runs on the interpreter");
                        None
                    }
                }
            }
            _ => None,
        };
        Ok(Self {
            id: NEXT_SNAPSHOT_ID.fetch_add(1, Ordering::Relaxed),
            revision,
            bundles: bundles
                .iter()
                .map(|b| BundleRevision {
                    name: b.name.clone(),
                    revision: b.revision().to_string(),
                    roots: b.roots(),
                    verified: b.verified,
                })
                .collect(),
            entry,
            defined,
            rule_paths,
            data: engine.get_data(),
            prototype: Mutex::new(engine),
            modules,
            loaded_at: std::time::SystemTime::now(),
            eval_timeout: opts.eval_timeout,
            vm,
            labels,
        })
    }

    /// The bundles this snapshot was built with, and their revisions.
    pub fn bundles(&self) -> &[BundleRevision] {
        &self.bundles
    }

    /// The revision number, counting loads from 1.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// When this snapshot was built.
    pub fn loaded_at(&self) -> std::time::SystemTime {
        self.loaded_at
    }

    /// The policy modules, as (name, text).
    pub fn modules(&self) -> &[(String, String)] {
        &self.modules
    }

    /// Whether the decision path names anything in the policies or data.
    pub fn has_decision(&self) -> bool {
        self.defined
    }

    /// Whether `path` names a decision: a rule or something inside a rule's value, or a
    /// document made only of rules (a package, ref-head rules) with no data at or below it.
    /// Plain data, or a package document that data is merged into, is not one.
    pub fn is_decision(&self, path: &DataRef) -> bool {
        let mut parts = Vec::with_capacity(path.segments().len());
        for s in path.segments() {
            match s {
                reference::Segment::Key(k) => parts.push(k.clone()),
                reference::Segment::Index(i) => parts.push(i.to_string()),
            }
        }
        if self.rule_paths.within_rule(&parts) {
            return true;
        }
        if !self.rule_paths.above_rules(&parts) {
            return false;
        }
        let mut node = &self.data;
        for part in &parts {
            match node
                .as_object()
                .ok()
                .and_then(|o| o.get(&Value::from(part.as_str())))
            {
                Some(next) => node = next,
                None => return true,
            }
        }
        false
    }

    /// Which engine evaluates the decision: `vm` or `interpreter`.
    /// The static path of every rule, `/`-separated without `data` (`envoy/authz/allow`).
    pub fn rule_paths(&self) -> Vec<String> {
        self.rule_paths.iter().map(|p| p.join("/")).collect()
    }

    pub fn engine_name(&self) -> &'static str {
        if self.vm.is_some() {
            "vm"
        } else {
            "interpreter"
        }
    }

    /// Evaluates the decision path against `input`.
    pub fn eval(&self, input: Value) -> Result<Evaluation, EvalError> {
        let start = Instant::now();
        if let Some(vm) = &self.vm {
            match vm.eval(input.clone()) {
                Ok(value) => {
                    return Ok(Evaluation {
                        value,
                        prints: Vec::new(),
                        elapsed: start.elapsed(),
                    });
                }
                Err(vm::VmEvalError::TimeLimit(limit)) => return Err(EvalError::Timeout(limit)),
                Err(vm::VmEvalError::Limit(message)) => return Err(EvalError::Limit(message)),
                Err(e) => {
                    tracing::debug!(error = %e, "the VM failed; evaluating on the interpreter");
                }
            }
        }
        let (result, prints) = self.with_engine(|engine| {
            engine.set_input(input);
            let result = match &self.entry {
                Entry::Rule(rule) => engine.eval_rule(rule.clone()),
                Entry::Reference(query) | Entry::Body(query) => engine
                    .eval_query(query.clone(), false)
                    .and_then(single_result),
            };
            let prints = engine.take_prints().unwrap_or_default();
            (result, prints)
        })?;
        let elapsed = start.elapsed();
        let value = result.map_err(|e| classify(e, self))?;
        Ok(Evaluation {
            value,
            prints,
            elapsed,
        })
    }

    /// Whether rules the decision depends on carry `labels` ([`Snapshot::rule_labels`]).
    pub fn has_rule_labels(&self) -> bool {
        self.labels.is_some()
    }

    /// The labels of the labelled rules that hold for `input`, for the decision log's
    /// `rule_labels` (empty when none hold or none have labels; see [`super::labels`]).
    pub fn rule_labels(&self, input: Value) -> Vec<serde_json::Value> {
        let Some(labels) = &self.labels else {
            return Vec::new();
        };
        self.with_engine(|engine| {
            engine.set_input(input);
            (Ok(labels.collect(engine)), Vec::new())
        })
        .ok()
        .and_then(|(r, _)| r.ok())
        .unwrap_or_default()
    }

    /// Evaluates any `data` path (e.g. for the HTTP API), with an optional input.
    pub fn eval_path(&self, path: &str, input: Option<Value>) -> Result<Value, EvalError> {
        self.eval_ref(&DataRef::parse(path), input, false)
    }

    /// Evaluates a reference into `data`, with an optional input. With `strict_builtin_errors`
    /// a failing builtin call is an evaluation error instead of undefined (OPA's
    /// `strict-builtin-errors`).
    pub fn eval_ref(
        &self,
        reference: &DataRef,
        input: Option<Value>,
        strict_builtin_errors: bool,
    ) -> Result<Value, EvalError> {
        let query = reference.to_query();
        let (result, _) = self.with_engine(|engine| {
            engine.set_input(input.unwrap_or(Value::Undefined));
            engine.set_strict_builtin_errors(strict_builtin_errors);
            let r = engine.eval_query(query, false).and_then(single_result);
            engine.set_strict_builtin_errors(false);
            let prints = engine.take_prints().unwrap_or_default();
            (r, prints)
        })?;
        result.map_err(|e| classify(e, self))
    }

    /// Evaluates an arbitrary Rego query and returns every result's bindings and expressions.
    pub fn eval_query(
        &self,
        query: &str,
        input: Option<Value>,
    ) -> Result<regorus::QueryResults, EvalError> {
        let (result, _) = self.with_engine(|engine| {
            engine.set_input(input.unwrap_or(Value::Undefined));
            let r = engine.eval_query(query.to_string(), false);
            let _ = engine.take_prints();
            (r, Vec::new())
        })?;
        result.map_err(|e| classify(e, self))
    }

    fn with_engine<R>(
        &self,
        f: impl FnOnce(&mut Engine) -> (anyhow::Result<R>, Vec<String>),
    ) -> Result<(anyhow::Result<R>, Vec<String>), EvalError> {
        ENGINE.with(|cell| {
            let Ok(mut slot) = cell.try_borrow_mut() else {
                // Re-entered on this thread (not expected): evaluate on a private clone.
                let mut engine = self.clone_prototype()?;
                return Ok(f(&mut engine));
            };
            let fresh = match slot.as_ref() {
                Some((id, _)) => *id != self.id,
                None => true,
            };
            if fresh {
                *slot = Some((self.id, self.clone_prototype()?));
            }
            let Some((_, engine)) = slot.as_mut() else {
                return Err(EvalError::Failed("no engine".into()));
            };
            // A panic inside regorus fails this evaluation, not the process or the request's
            // connection; the engine it left behind is not reused.
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(engine))) {
                Ok(result) => Ok(result),
                Err(_) => {
                    *slot = None;
                    tracing::error!("the policy engine panicked; the evaluation failed");
                    Err(EvalError::Failed(
                        "internal error in the policy engine".into(),
                    ))
                }
            }
        })
    }

    fn clone_prototype(&self) -> Result<Engine, EvalError> {
        self.prototype
            .lock()
            .map(|e| e.clone())
            .map_err(|_| EvalError::Failed("policy engine unavailable".into()))
    }
}

fn classify(e: anyhow::Error, snapshot: &Snapshot) -> EvalError {
    match e.downcast_ref::<regorus::LimitError>() {
        Some(regorus::LimitError::TimeLimitExceeded { .. }) => {
            return EvalError::Timeout(snapshot.eval_timeout);
        }
        Some(limit) => return EvalError::Limit(format!("{}: {limit}", builtins::LIMIT_MARKER)),
        None => {}
    }
    let message = e.to_string();
    if message.contains(builtins::LIMIT_MARKER) {
        return EvalError::Limit(message);
    }
    EvalError::Failed(message)
}

fn single_result(results: regorus::QueryResults) -> anyhow::Result<Value> {
    match results.result.len() {
        0 => Ok(Value::Undefined),
        1 => Ok(results
            .result
            .into_iter()
            .next()
            .and_then(|r| r.expressions.into_iter().next())
            .map(|e| e.value)
            .unwrap_or(Value::Undefined)),
        _ => Err(anyhow::anyhow!("multiple evaluation results")),
    }
}

/// Decides how the decision is evaluated (and whether anything defines it); compile errors
/// surface here, also for entries that are evaluated as queries.
fn resolve_entry(engine: &mut Engine, opts: &PolicyOptions) -> Result<(Entry, bool), PolicyError> {
    let compile_check = |engine: &mut Engine| {
        engine
            .eval_query("true".to_string(), false)
            .map_err(|e| PolicyError::Compile(e.to_string()))
    };
    if let Some(body) = &opts.decision_query {
        compile_check(engine)?;
        check_query_body(body)?;
        return Ok((Entry::Body(body.clone()), true));
    }
    let reference = DataRef::parse(&opts.decision_path);
    if let Some(rule) = reference.rule_path() {
        match engine.compile_with_entrypoint(&rule.as_str().into()) {
            Ok(_) => return Ok((Entry::Rule(rule), true)),
            Err(e) if e.to_string().contains("not a valid rule path") => {}
            Err(e) => return Err(PolicyError::Compile(e.to_string())),
        }
    }
    compile_check(engine)?;
    let query = reference.to_query();
    let prefix = reference.dotted_prefix();
    let packages = engine
        .get_packages()
        .map_err(|e| PolicyError::Compile(e.to_string()))?;
    // A package at, above or below the reference may define it (ref-head rules, rules of a
    // package document); otherwise only data can.
    let defined = packages.iter().any(|p| {
        p == &prefix || p.starts_with(&format!("{prefix}.")) || prefix.starts_with(&format!("{p}."))
    }) || engine
        .eval_query(query.clone(), false)
        .is_ok_and(|r| !r.result.is_empty());
    Ok((Entry::Reference(query), defined))
}

/// Parses the deprecated `query` body, so that a syntax error stops start-up.
fn check_query_body(body: &str) -> Result<(), PolicyError> {
    let source = regorus::unstable::Source::from_contents("query".into(), body.to_string())
        .map_err(|e| PolicyError::Compile(format!("query: {e}")))?;
    let mut parser = regorus::unstable::Parser::new(&source)
        .map_err(|e| PolicyError::Compile(format!("query: {e}")))?;
    parser
        .parse_user_query()
        .map(|_| ())
        .map_err(|e| PolicyError::Compile(format!("query: {e}")))
}

/// A parse error that Rego v0 syntax causes under v1 gets a hint saying how to load v0.
pub(crate) fn with_v0_hint(message: String, rego_v0: bool) -> String {
    const V0_SIGNS: &[&str] = &["`if` keyword is required", "`contains` keyword is required"];
    if !rego_v0 && V0_SIGNS.iter().any(|s| message.contains(s)) {
        format!(
            "{message}\nhint: this looks like Rego v0; load it with --v0-compatible \
             (or `rego_version: 0` in its bundle's manifest), or add `if`/`contains` for Rego v1"
        )
    } else {
        message
    }
}
