//! `portcullis check [--strict] [-b] [-f json] PATH...`, like `opa check`: parse and compile
//! policies exactly as the server loads them, and report every error.
//!
//! Each module is parsed on its own, so every file with a syntax error is reported, not only
//! the first; when all parse, they are compiled together as the server compiles them (the same
//! loader, extension builtins, recursion and arity checks), which reports the first compile
//! error. `--strict` adds the checks of [`super::lint`]. Errors go to stderr as OPA prints them
//! (`1 error occurred: file:row:col: code: message`, or `N errors occurred:` and one per line),
//! or with `-f json` as `{"errors": [{"message", "code", "location": {"file", "row", "col"}}]}`.
//! Exit code 0 when clean, 1 on any error, 2 on a usage error.

use std::path::PathBuf;

use super::diagnostic::{self, RegoError};
use crate::policy::{PolicyError, PolicyOptions, Snapshot, Sources};

/// Output format of `check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum CheckFormat {
    /// OPA's text: `N errors occurred:` and one error per line.
    #[default]
    Pretty,
    /// `{"errors": [...]}`.
    Json,
}

/// Flags of `portcullis check`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// Load every PATH as a bundle (directory or `.tar.gz`).
    #[arg(short = 'b', long = "bundle")]
    pub bundle: bool,
    /// Output format of the errors.
    #[arg(short = 'f', long = "format", value_enum, default_value = "pretty")]
    pub format: CheckFormat,
    /// Strict mode: also report unused imports, unused local assignments and arguments,
    /// duplicate imports, variables shadowing `input`/`data` and deprecated builtins.
    #[arg(short = 'S', long = "strict")]
    pub strict: bool,
    /// The most errors to report (0 for all).
    #[arg(short = 'm', long = "max-errors", default_value_t = 10)]
    pub max_errors: usize,
    /// File name patterns to skip when loading directories (e.g. `*_test.rego`).
    #[arg(long = "ignore")]
    pub ignore: Vec<String>,
    /// Parse policies as Rego v0.
    #[arg(long = "v0-compatible")]
    pub v0_compatible: bool,
    /// Hidden: the Check client moved to `authorize`; this flag only says so.
    #[arg(long = "addr", hide = true)]
    pub addr: Option<String>,
    /// Policy files or directories (bundles with `-b`).
    pub paths: Vec<PathBuf>,
}

/// What `check` tells a user who typed the Check client's old form.
pub const AUTHORIZE_HINT: &str = "`check` checks policies, like `opa check`; to send a \
     CheckRequest to an ext_authz server use `portcullis authorize --addr HOST:PORT ...` (same flags)";

/// A loader error (unreadable, binary or oversized file, bad bundle) as one error.
fn load_error(e: &PolicyError) -> RegoError {
    match e {
        PolicyError::Compile(m) => RegoError::from_message(m, "rego_parse_error"),
        other => RegoError::plain(other.to_string()),
    }
}

/// Every error of the policies at `args.paths`; empty when they are clean.
pub fn check(args: &CheckArgs) -> Vec<RegoError> {
    let limits = crate::bundle::Limits::default();
    let (paths, bundles) = if args.bundle {
        (Vec::new(), args.paths.clone())
    } else {
        (args.paths.clone(), Vec::new())
    };
    let sources = match Sources::read_with(
        &paths,
        &bundles,
        &args.ignore,
        &crate::policy::loader::BundleOptions {
            verification: None,
            // As `opa check`, signatures are not verified: this checks policy text.
            skip_verify: true,
            limits: &limits,
        },
    ) {
        Ok(s) => s,
        Err(e) => return vec![load_error(&e)],
    };
    // Parse every module on its own, so that each file's syntax error is reported.
    let mut engine = regorus::Engine::new();
    let mut errors = Vec::new();
    let modules = sources
        .modules
        .iter()
        .map(|(name, text)| (name, text, args.v0_compatible))
        .chain(sources.bundles.iter().flat_map(|b| {
            b.modules
                .iter()
                .map(|m| (&m.name, &m.text, m.rego_v0.unwrap_or(args.v0_compatible)))
        }));
    for (name, text, v0) in modules {
        engine.set_rego_v0(v0);
        let parsed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            engine.add_policy(name.clone(), text.clone())
        }));
        match parsed {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => errors.push(RegoError::from_message(
                &crate::policy::with_v0_hint(e.to_string(), v0),
                "rego_parse_error",
            )),
            Err(_) => errors.push(RegoError::new(
                "rego_parse_error",
                format!("{name}: internal error in the policy parser"),
                None,
            )),
        }
    }
    if errors.is_empty() {
        let opts = PolicyOptions {
            rego_v0: args.v0_compatible,
            ..Default::default()
        };
        if let Err(e) = Snapshot::build(&sources, &opts, 1) {
            errors.push(match &e {
                PolicyError::Compile(m) => RegoError::from_message(m, "rego_compile_error"),
                other => RegoError::plain(other.to_string()),
            });
        }
        if args.strict {
            errors.extend(super::lint::strict(engine.get_modules()));
        }
    }
    if args.max_errors > 0 && errors.len() > args.max_errors {
        errors.truncate(args.max_errors);
        errors.push(RegoError::new(
            "rego_compile_error",
            "error limit reached",
            None,
        ));
    }
    errors
}

/// Runs `check`, prints the errors, and returns the exit code.
pub fn main(args: &CheckArgs) -> i32 {
    if args.addr.is_some() {
        eprintln!("error: {AUTHORIZE_HINT}");
        return 2;
    }
    if args.paths.is_empty() {
        eprintln!("error: specify at least one file\n\n{AUTHORIZE_HINT}");
        return 2;
    }
    let errors = check(args);
    if errors.is_empty() {
        return 0;
    }
    match args.format {
        CheckFormat::Pretty => eprintln!("{}", diagnostic::summary(&errors)),
        CheckFormat::Json => eprintln!("{}", diagnostic::json(&errors)),
    }
    1
}
