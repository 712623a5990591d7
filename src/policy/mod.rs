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

pub(crate) mod builtins;
pub mod download;
mod error;
mod labels;
pub(crate) mod loader;
pub(crate) mod overlay;
pub(crate) mod recursion;
pub(crate) mod reference;
mod roots;
mod snapshot;
mod store;
pub(crate) mod vm;
pub mod watch;

use std::time::Duration;

use crate::bundle::{self, Bundle};
pub use error::{EvalError, PolicyError};
pub use loader::Sources;
pub use reference::DataRef;
pub(crate) use snapshot::with_v0_hint;
pub use snapshot::{
    BundleRevision, DEFAULT_MEMORY_LIMIT, EVAL_STACK_BYTES, Evaluation, Snapshot,
    default_memory_limit, set_memory_limit,
};
pub use store::{LoadSpec, PolicyStore};

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
    /// regorus' interpreter, for every policy.
    Interpreter,
    /// regorus' bytecode VM ([`vm`]) when the decision is a rule the VM compiles and is known to
    /// answer like the interpreter; the interpreter otherwise, and for a request the VM fails
    /// on with anything but the time limit. The default.
    #[default]
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    use regorus::Value;

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
