//! Evaluating the decision rule on regorus' bytecode VM (RVM) instead of the interpreter.
//!
//! The interpreter spends most of a decision on its own bookkeeping (path strings, rule
//! scheduling, object maps); the RVM runs the same policy as a register program. A
//! [`VmPolicy`] is built from the snapshot's prepared [`Engine`] (policies, data, the
//! [`super::builtins`] extensions): the engine compiles the entrypoint as it does for the
//! interpreter, regorus' RVM compiler turns that into a [`Program`], shared by all threads, and
//! each thread runs it on its own `RegoVM`, kept in a thread local like the snapshot's
//! interpreter engines. Evaluation takes no lock.
//!
//! # Extension builtins
//!
//! The RVM cannot call engine extensions, so every builtin of [`super::builtins`] is registered
//! with the RVM compiler as a *host-await* builtin: a call compiles to `HostAwait`, the VM (in
//! suspendable mode) stops with [`SuspendReason::HostAwait`] and the call's arguments, and
//! [`VmPolicy::eval`] runs the same Rust function the interpreter extension runs and resumes the
//! VM with the result. As with [`super::builtins::register`] (OPA's default), a failing call is
//! undefined. A call with an undefined argument is skipped by the VM, as by the interpreter.
//! Policies that call no extension run in the cheaper run-to-completion mode.
//!
//! # Semantics
//!
//! Results equal the interpreter's, except where the VM follows OPA and the interpreter does
//! not: a failing regorus builtin (`to_number("x")`) is undefined where the interpreter
//! (regorus' strict default) raises an error, and a set rule whose member is undefined for one
//! binding keeps the others where the interpreter drops them all. `print()` is not supported.
//! regorus 0.14.1's RVM gets more wrong, which this module works around or refuses (the tests
//! show each case):
//!
//! - It emits no undefined checks for `x := expr`, comprehension members and rule values:
//!   `x := input.missing; not x == 1` holds, arrays get undefined members, an `else` is
//!   skipped. `add_undefined_guards` patches the program.
//! - It does not report conflicts (a complete rule or function with two values is undefined or
//!   takes the last value), ignores the key of `key, value in coll`, default functions and
//!   defaults whose value is not a constant, skips the rest of an `else` chain once a body
//!   with a loop fails, runs a function named as the entrypoint, cannot
//!   resolve imports of escaped package names (`data.a["b.c"]`),
//!   recurses forever on a rule named like the builtin it calls, and in suspendable mode
//!   mishandles lookups through rule-defined documents and independent rule bodies. Policies
//!   that could hit one of these are refused with [`VmCompileError::Unsupported`].
//!
//! A refused policy, or anything the RVM compiler rejects (`with`, `print`, partial objects
//! with constant keys, rules overlapping data, ...), is a [`VmCompileError`]: the caller keeps
//! the interpreter.
//!
//! # Limits
//!
//! The time limit is enforced by regorus' execution timer on the VM (paused while suspended)
//! and, around host calls, by a wall-clock check of the whole evaluation; both surface as
//! [`VmEvalError::TimeLimit`]. The RVM's instruction budget is lifted, as the interpreter has
//! none. After a failed evaluation the thread's VM is dropped and rebuilt.

use std::cell::RefCell;
use std::num::NonZeroU32;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::Instruction;
use regorus::rvm::program::Program;
use regorus::rvm::vm::{ExecutionMode, ExecutionState, RegoVM, SuspendReason, VmError};
use regorus::utils::limits::ExecutionTimerConfig;
use regorus::{Engine, Value};

use super::builtins::{self, Builtin, ErrorMode};

mod checks;
#[cfg(test)]
mod tests;

use checks::{add_undefined_guards, conflict_risk, suspendable_risk, syntax_risk};

/// The time limit of a new [`VmPolicy`]; see [`VmPolicy::with_time_limit`].
pub const DEFAULT_TIME_LIMIT: Duration = Duration::from_millis(100);

/// Why a policy could not be compiled for the VM. The interpreter may still run it.
#[derive(Debug, thiserror::Error)]
pub enum VmCompileError {
    /// regorus' own compile step (the one the interpreter also runs) failed.
    #[error("compiling {entrypoint}: {message}")]
    Engine { entrypoint: String, message: String },
    /// The RVM does not support, or would get wrong, something the policy uses.
    #[error("the RVM cannot run {entrypoint}: {message}")]
    Unsupported { entrypoint: String, message: String },
}

/// Why one VM evaluation failed.
#[derive(Debug, thiserror::Error)]
pub enum VmEvalError {
    /// The evaluation ran longer than the time limit.
    #[error("policy evaluation exceeded the time limit of {0:?}")]
    TimeLimit(Duration),
    /// The VM reported an error.
    #[error("{0}")]
    Vm(VmError),
    /// The VM stopped in a way this host does not handle.
    #[error("{0}")]
    Host(String),
    /// A guarded builtin's resource limit.
    #[error("{0}")]
    Limit(String),
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's VM for the [`VmPolicy`] (by id) it last evaluated.
    static VM: RefCell<Option<(u64, RegoVM)>> = const { RefCell::new(None) };
}

/// The decision rule compiled to RVM bytecode; cheap to evaluate from any thread.
#[derive(Debug)]
pub struct VmPolicy {
    id: u64,
    #[cfg_attr(not(test), allow(dead_code))]
    entrypoint: String,
    program: Arc<Program>,
    data: Value,
    /// The extension builtins.
    host: Vec<Builtin>,
    mode: ExecutionMode,
    time_limit: Duration,
}

impl VmPolicy {
    /// Compiles `entrypoint` (a rule path such as `data.envoy.authz.allow`) of the policies and
    /// data in `engine`, which has the [`super::builtins`] extensions registered.
    pub fn compile(engine: &mut Engine, entrypoint: &str) -> Result<VmPolicy, VmCompileError> {
        let compiled = engine
            .compile_with_entrypoint(&entrypoint.into())
            .map_err(|e| VmCompileError::Engine {
                entrypoint: entrypoint.to_string(),
                message: e.to_string(),
            })?;
        let unsupported = |message: String| VmCompileError::Unsupported {
            entrypoint: entrypoint.to_string(),
            message,
        };
        let host: Vec<Builtin> = builtins::all().collect();
        let awaited: Vec<_> = host
            .iter()
            .map(|b| (b.name, usize::from(b.nargs)))
            .collect();
        // A panic in the RVM compiler must not take a reload down.
        let program = std::panic::catch_unwind(AssertUnwindSafe(|| {
            Compiler::compile_from_policy_with_host_await(&compiled, &[entrypoint], &awaited)
        }))
        .map_err(|_| unsupported("the RVM compiler panicked".into()))?
        .map_err(|e| unsupported(e.to_string()))?;
        let awaits = program
            .instructions
            .iter()
            .any(|i| matches!(i, Instruction::HostAwait { .. }));
        let risk = conflict_risk(&program)
            .or_else(|| syntax_risk(&compiled, &program))
            .or_else(|| awaits.then(|| suspendable_risk(&program)).flatten());
        if let Some(reason) = risk {
            return Err(unsupported(reason));
        }
        let mut program = Arc::unwrap_or_clone(program);
        add_undefined_guards(&mut program).map_err(unsupported)?;
        let policy = VmPolicy {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            entrypoint: entrypoint.to_string(),
            program: Arc::new(program),
            data: engine.get_data(),
            host,
            mode: match awaits {
                true => ExecutionMode::Suspendable,
                false => ExecutionMode::RunToCompletion,
            },
            time_limit: DEFAULT_TIME_LIMIT,
        };
        // Rules that overlap data fail when data is set: find out now, not on a request.
        policy
            .new_vm()
            .map_err(|e| unsupported(format!("data: {e}")))?;
        Ok(policy)
    }

    /// Sets the longest one evaluation may run (default [`DEFAULT_TIME_LIMIT`]).
    pub fn with_time_limit(mut self, limit: Duration) -> Self {
        self.time_limit = limit;
        self
    }

    /// The rule path this policy evaluates.
    #[cfg(test)]
    pub(crate) fn entrypoint(&self) -> &str {
        &self.entrypoint
    }

    /// Evaluates the entrypoint against `input`. An undefined decision is `Value::Undefined`.
    pub fn eval(&self, input: Value) -> Result<Value, VmEvalError> {
        VM.with(|cell| {
            let Ok(mut slot) = cell.try_borrow_mut() else {
                // Re-entered on this thread (not expected): evaluate on a private VM.
                return self.run(&mut self.new_vm()?, input);
            };
            let vm = match &mut *slot {
                Some((id, vm)) if *id == self.id => vm,
                other => &mut other.insert((self.id, self.new_vm()?)).1,
            };
            // A panic inside the VM fails this evaluation (the interpreter then runs it).
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| self.run(vm, input)))
                .unwrap_or_else(|_| Err(VmEvalError::Host("the VM panicked".into())));
            if result.is_err() {
                *slot = None;
            }
            result
        })
    }

    fn new_vm(&self) -> Result<RegoVM, VmEvalError> {
        let mut vm = RegoVM::new();
        vm.load_program(self.program.clone());
        vm.set_data(self.data.clone()).map_err(VmEvalError::Vm)?;
        vm.set_execution_mode(self.mode);
        vm.set_max_instructions(usize::MAX);
        // OPA's default: a failing builtin call is undefined.
        vm.set_strict_builtin_errors(false);
        vm.set_execution_timer_config(Some(ExecutionTimerConfig {
            limit: self.time_limit,
            check_interval: NonZeroU32::MIN.saturating_add(63),
        }));
        Ok(vm)
    }

    fn run(&self, vm: &mut RegoVM, input: Value) -> Result<Value, VmEvalError> {
        let start = Instant::now();
        vm.set_input(input);
        let mut value = vm
            .execute_entry_point_by_index(0)
            .map_err(|e| self.vm_error(e))?;
        loop {
            let (name, args) = match vm.execution_state() {
                ExecutionState::Suspended {
                    reason:
                        SuspendReason::HostAwait {
                            identifier,
                            argument,
                            ..
                        },
                    ..
                } => (identifier.clone(), argument.clone()),
                ExecutionState::Suspended { reason, .. } => {
                    return Err(VmEvalError::Host(format!("VM suspended: {reason:?}")));
                }
                ExecutionState::Error { error } => return Err(self.vm_error(error.clone())),
                _ => return Ok(value),
            };
            let result = self.call_host(&name, &args)?;
            if start.elapsed() > self.time_limit {
                return Err(VmEvalError::TimeLimit(self.time_limit));
            }
            value = vm.resume(Some(result)).map_err(|e| self.vm_error(e))?;
        }
    }

    /// Runs extension builtin `name` on `args` (an array); a failing call is undefined, a
    /// limit fails the evaluation.
    fn call_host(&self, name: &Value, args: &Value) -> Result<Value, VmEvalError> {
        let builtin = match name {
            Value::String(name) => self.host.iter().find(|b| b.name == &**name),
            _ => None,
        };
        let (Some(builtin), Value::Array(args)) = (builtin, args) else {
            return Err(VmEvalError::Host(format!(
                "unexpected host call {name}({args})"
            )));
        };
        builtin
            .eval(args.as_slice(), ErrorMode::Undefined)
            .map_err(|e| VmEvalError::Limit(e.to_string()))
    }

    fn vm_error(&self, error: VmError) -> VmEvalError {
        match error {
            VmError::TimeLimitExceeded { .. } => VmEvalError::TimeLimit(self.time_limit),
            other => VmEvalError::Vm(other),
        }
    }
}
