//! Policies: loading, the compiled snapshot, hot reload and the builtins regorus lacks.
//!
//! A [`Snapshot`] is one immutable, compiled revision of the policies and data: the local PATH
//! files plus every active bundle. The [`PolicyStore`] holds the current one behind an
//! `ArcSwap`: the request path loads it without a lock, and a reload or a bundle activation swaps
//! in a new one atomically (or keeps the old one when the new policies do not compile, or a
//! bundle writes outside its roots).
//!
//! Bundles own their roots: two bundles whose roots overlap are refused, a bundle's data and
//! module packages must lie within its roots, and local PATH files must not write under any
//! bundle's roots. A store that expects configured bundles is *ready* only once each has been
//! activated at least once ([`PolicyStore::is_ready`]); until then Checks see only the local
//! files (usually nothing, so every decision is undefined, as in OPA).
//!
//! Evaluation needs a mutable regorus `Engine`. Each worker thread keeps its own clone of the
//! snapshot's prepared engine, made once per thread and revision; the snapshot's prototype
//! engine is only locked to make that clone, never on the per-request path.

pub mod builtins;
pub mod download;
pub mod loader;
pub mod overlay;
pub mod recursion;
pub mod reference;
mod roots;
pub mod vm;
pub mod watch;

use std::cell::RefCell;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use regorus::{Engine, Value};

use crate::bundle::{self, Bundle};
pub use loader::Sources;
pub use reference::DataRef;

/// Why policies could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Unsupported { path: PathBuf, message: String },
    #[error("{path}: invalid data: {message}")]
    Data { path: PathBuf, message: String },
    /// A parse or compile error; the message starts with `file:line:col`.
    #[error("{0}")]
    Compile(String),
    #[error("{0}")]
    Engine(String),
    /// A bundle could not be read, failed verification, or writes outside its roots.
    #[error("bundle {name}: {message}")]
    Bundle { name: String, message: String },
}

impl PolicyError {
    fn bundle(name: &str, message: impl std::fmt::Display) -> Self {
        Self::Bundle {
            name: name.to_string(),
            message: message.to_string(),
        }
    }
}

/// Why one evaluation failed. Each maps to a gRPC error on the Check path.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("policy evaluation exceeded the time limit of {0:?}")]
    Timeout(Duration),
    /// A resource limit: the memory bound, or a guarded builtin's
    /// ([`builtins::guarded`]).
    #[error("{0}")]
    Limit(String),
    #[error("{0}")]
    Failed(String),
}

impl EvalError {
    /// The reason, for metrics and logs.
    pub fn reason(&self) -> crate::telemetry::labels::CheckReason {
        use crate::telemetry::labels::CheckReason;
        match self {
            EvalError::Timeout(_) => CheckReason::EvalTimeout,
            EvalError::Limit(_) => CheckReason::EvalLimit,
            EvalError::Failed(_) => CheckReason::EnvoyauthEvalError,
        }
    }
}

/// How snapshots are built.
#[derive(Debug, Clone)]
pub struct PolicyOptions {
    /// The decision path, e.g. `envoy/authz/allow` (see [`reference`]).
    pub decision_path: String,
    /// OPA-Envoy's deprecated `query`: a Rego query body evaluated instead of the path; the
    /// decision is the first expression's value of its only result.
    pub decision_query: Option<String>,
    /// The longest a single evaluation may run.
    pub eval_timeout: Duration,
    /// Parse modules as Rego v0 (OPA's `--v0-compatible`).
    pub rego_v0: bool,
    /// File name patterns skipped when walking directories (OPA's `--ignore`).
    pub ignore: Vec<String>,
    /// How bundles given on the command line (PATH archives, `--bundle`) are verified (OPA's
    /// `--verification-key`); `None` refuses signed ones, as OPA does.
    pub verification: Option<bundle::Verification>,
    /// Load signed local bundles without checking their signatures (OPA's `--skip-verify`).
    pub skip_verify: bool,
    /// Limits on bundle archives.
    pub bundle_limits: bundle::Limits,
    /// Which engine evaluates the decision rule.
    pub engine: EngineChoice,
}

/// Which engine evaluates the decision on the Check path (`runtime.policy_engine`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum EngineChoice {
    /// regorus' interpreter, for every policy (the default).
    #[default]
    Interpreter,
    /// regorus' bytecode VM ([`vm`]) when the decision is a rule the VM compiles and is known to
    /// answer like the interpreter; the interpreter otherwise, and for a request the VM fails
    /// on with anything but the time limit.
    Auto,
}

impl Default for PolicyOptions {
    fn default() -> Self {
        Self {
            decision_path: reference::DEFAULT_PATH.to_string(),
            decision_query: None,
            eval_timeout: Duration::from_millis(100),
            rego_v0: false,
            ignore: Vec::new(),
            verification: None,
            skip_verify: false,
            bundle_limits: bundle::Limits::default(),
            engine: EngineChoice::default(),
        }
    }
}

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
                .map_err(|e| PolicyError::Compile(e.to_string()))?;
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
                    .map_err(|e| PolicyError::Compile(e.to_string()))?;
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

    /// Evaluates any `data` path (e.g. for the HTTP API), with an optional input.
    pub fn eval_path(&self, path: &str, input: Option<Value>) -> Result<Value, EvalError> {
        let query = DataRef::parse(path).to_query();
        let (result, _) = self.with_engine(|engine| {
            engine.set_input(input.unwrap_or(Value::Undefined));
            let r = engine.eval_query(query, false).and_then(single_result);
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

/// What a store loads: local PATHs, `--bundle` PATHs, and the names of configured bundles that
/// arrive later through [`PolicyStore::activate`].
#[derive(Debug, Clone, Default)]
pub struct LoadSpec {
    /// Policy and data files and directories; `.tar.gz` files are read as bundles.
    pub paths: Vec<PathBuf>,
    /// Bundle directories or archives (OPA's `--bundle`).
    pub bundle_paths: Vec<PathBuf>,
    /// `bundles.<name>` from the config: the store is ready once each has been activated.
    pub remote_bundles: Vec<String>,
}

/// The sources of the current snapshot, kept to rebuild it.
#[derive(Debug, Default)]
struct Loaded {
    local: Sources,
    remote: std::collections::BTreeMap<String, Arc<Bundle>>,
}

/// The current snapshot and how to rebuild it.
pub struct PolicyStore {
    current: ArcSwap<Snapshot>,
    spec: LoadSpec,
    opts: PolicyOptions,
    revision: AtomicU64,
    reload_lock: Mutex<Loaded>,
    /// Runtime writes, applied over the local sources at every build (see [`overlay`]).
    overlay: Mutex<overlay::Overlay>,
    ready: tokio::sync::watch::Sender<bool>,
    status: download::StatusBoard,
}

impl std::fmt::Debug for PolicyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyStore")
            .field("spec", &self.spec)
            .field("revision", &self.revision.load(Ordering::Relaxed))
            .finish()
    }
}

impl PolicyStore {
    /// Loads and compiles the policies under `paths`.
    pub fn load(paths: Vec<PathBuf>, opts: PolicyOptions) -> Result<Self, PolicyError> {
        Self::load_with(
            LoadSpec {
                paths,
                ..Default::default()
            },
            opts,
        )
    }

    /// Loads the local files and bundles of `spec`. With configured bundles the store is not
    /// ready until each has been activated.
    pub fn load_with(spec: LoadSpec, opts: PolicyOptions) -> Result<Self, PolicyError> {
        let sources = read_local(&spec, &opts)?;
        let snapshot = Snapshot::build(&sources, &opts, 1)?;
        let ready = spec.remote_bundles.is_empty();
        Ok(Self {
            current: ArcSwap::from_pointee(snapshot),
            spec,
            opts,
            revision: AtomicU64::new(1),
            reload_lock: Mutex::new(Loaded {
                local: sources,
                remote: Default::default(),
            }),
            overlay: Mutex::default(),
            ready: tokio::sync::watch::Sender::new(ready),
            status: Default::default(),
        })
    }

    /// The current snapshot; no lock is taken.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The paths this store loads from (PATH arguments, then `--bundle` paths).
    pub fn paths(&self) -> Vec<PathBuf> {
        self.spec
            .paths
            .iter()
            .chain(&self.spec.bundle_paths)
            .cloned()
            .collect()
    }

    /// The configured bundles this store waits for.
    pub fn expected_bundles(&self) -> &[String] {
        &self.spec.remote_bundles
    }

    /// The options snapshots are built with.
    pub fn options(&self) -> &PolicyOptions {
        &self.opts
    }

    /// Whether every configured bundle has been activated at least once.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Watches readiness: the value turns `true` once every configured bundle is active.
    pub fn subscribe_ready(&self) -> tokio::sync::watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// Download status of the configured bundles (shared with their downloaders).
    pub fn bundle_status(&self) -> &download::StatusBoard {
        &self.status
    }

    /// Configured bundles that have not been activated yet.
    pub fn pending_bundles(&self) -> Vec<String> {
        let active: Vec<String> = self
            .snapshot()
            .bundles()
            .iter()
            .map(|b| b.name.clone())
            .collect();
        self.spec
            .remote_bundles
            .iter()
            .filter(|n| !active.contains(n))
            .cloned()
            .collect()
    }

    /// Re-reads and recompiles the local paths, keeping the active downloaded bundles. On error
    /// the current snapshot keeps serving.
    pub fn reload(&self) -> Result<u64, PolicyError> {
        let mut loaded = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        let sources = read_local(&self.spec, &self.opts)?;
        let remote: Vec<Arc<Bundle>> = loaded.remote.values().cloned().collect();
        let revision = self.swap(&self.lock_overlay().apply(&sources), &remote)?;
        loaded.local = sources;
        Ok(revision)
    }

    /// Activates a downloaded bundle (replacing the one of the same name): the new snapshot
    /// compiles with it, or nothing changes and the previous revision keeps serving.
    pub fn activate(&self, bundle: Bundle) -> Result<u64, PolicyError> {
        if !self.spec.remote_bundles.contains(&bundle.name) {
            return Err(PolicyError::bundle(
                &bundle.name,
                "not a configured bundle (bundles.<name>)",
            ));
        }
        let mut loaded = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        let name = bundle.name.clone();
        let bundle = Arc::new(bundle);
        let remote: Vec<Arc<Bundle>> = loaded
            .remote
            .iter()
            .filter(|(n, _)| **n != name)
            .map(|(_, b)| b.clone())
            .chain(std::iter::once(bundle.clone()))
            .collect();
        let revision = self.swap(&self.lock_overlay().apply(&loaded.local), &remote)?;
        loaded.remote.insert(name, bundle);
        let ready = self
            .spec
            .remote_bundles
            .iter()
            .all(|n| loaded.remote.contains_key(n));
        if ready && !*self.ready.borrow() {
            self.ready.send_replace(true);
        }
        Ok(revision)
    }

    fn swap(&self, sources: &Sources, remote: &[Arc<Bundle>]) -> Result<u64, PolicyError> {
        let revision = self.revision.load(Ordering::Relaxed) + 1;
        let snapshot = Snapshot::build_with(sources, remote, &self.opts, revision)?;
        self.revision.store(revision, Ordering::Relaxed);
        self.current.store(Arc::new(snapshot));
        Ok(revision)
    }
}

fn read_local(spec: &LoadSpec, opts: &PolicyOptions) -> Result<Sources, PolicyError> {
    Sources::read_with(
        &spec.paths,
        &spec.bundle_paths,
        &opts.ignore,
        &loader::BundleOptions {
            verification: opts.verification.as_ref(),
            skip_verify: opts.skip_verify,
            limits: &opts.bundle_limits,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(rego: &str, path: &str) -> Result<Snapshot, PolicyError> {
        let mut s = Sources::default();
        s.add_module("policy.rego".into(), rego.into());
        Snapshot::build(
            &s,
            &PolicyOptions {
                decision_path: path.into(),
                ..Default::default()
            },
            1,
        )
    }

    #[test]
    fn rule_and_package_entries() {
        let rego = "package envoy.authz\nallow if input.x == 1\nresponse := {\"allowed\": allow}\n";
        let s = snapshot(rego, "envoy/authz/allow").unwrap();
        let input = Value::from_json_str(r#"{"x": 1}"#).unwrap();
        assert_eq!(s.eval(input.clone()).unwrap().value, Value::from(true));
        assert_eq!(s.eval(Value::new_object()).unwrap().value, Value::Undefined);
        let s = snapshot(rego, "envoy/authz").unwrap();
        let v = s.eval(input).unwrap().value;
        assert_eq!(v["allow"], Value::from(true));
    }

    #[test]
    fn missing_entry_is_undefined_not_an_error() {
        let s = snapshot("package other\nx := 1\n", "envoy/authz/allow").unwrap();
        assert!(!s.has_decision());
        assert_eq!(s.eval(Value::new_object()).unwrap().value, Value::Undefined);
    }

    #[test]
    fn parse_errors_name_file_line_col() {
        let err = snapshot("package p\nallow if {\n  input.x ==\n}\n", "p/allow")
            .unwrap_err()
            .to_string();
        assert!(err.contains("policy.rego:"), "{err}");
    }

    #[test]
    fn conflicts_are_eval_errors() {
        let s = snapshot("package p\nv := 1 if input.a\nv := 2 if input.b\n", "p/v").unwrap();
        let input = Value::from_json_str(r#"{"a": true, "b": true}"#).unwrap();
        assert!(matches!(s.eval(input), Err(EvalError::Failed(_))));
    }

    #[test]
    fn prints_are_gathered() {
        let s = snapshot(
            "package p\nallow if { print(\"hello\", input.x); true }\n",
            "p/allow",
        )
        .unwrap();
        let ev = s
            .eval(Value::from_json_str(r#"{"x": 7}"#).unwrap())
            .unwrap();
        assert_eq!(ev.value, Value::from(true));
        assert!(
            ev.prints.iter().any(|p| p.contains("hello")),
            "{:?}",
            ev.prints
        );
    }

    #[test]
    fn looping_policy_times_out() {
        let mut s = Sources::default();
        s.add_module(
            "loop.rego".into(),
            "package p\nallow if { count([1 | some x in numbers.range(1, 5000); some y in numbers.range(1, 5000)]) > 0 }\n"
                .into(),
        );
        let snap = Snapshot::build(
            &s,
            &PolicyOptions {
                decision_path: "p/allow".into(),
                eval_timeout: Duration::from_millis(50),
                ..Default::default()
            },
            1,
        )
        .unwrap();
        let start = Instant::now();
        let r = snap.eval(Value::new_object());
        assert!(matches!(r, Err(EvalError::Timeout(_))), "{r:?}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
