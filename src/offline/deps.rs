//! `portcullis deps [-d PATH]... [-b BUNDLE]... QUERY`, like `opa deps`: the base documents
//! (data from files) and virtual documents (rules) a query depends on, directly or through the
//! rules it uses.
//!
//! The dependency analysis is the one that refuses recursion when policies load
//! ([`crate::policy::recursion`]): a reference depends on every rule at, below or above it, and
//! a `data` reference that reaches no rule is a base document. References are printed as
//! dotted paths up to their first dynamic part (`data.roles` for `data.roles[input.user]`);
//! OPA's JSON lists them as AST terms instead.

use std::collections::{BTreeSet, VecDeque};
use std::path::PathBuf;

use crate::policy::loader::BundleOptions;
use crate::policy::recursion;
use crate::policy::{PolicyOptions, Snapshot, Sources};

/// The package the query is wrapped in, to analyse it as a rule.
const QUERY_PACKAGE: &str = "portcullis_deps_query";

/// Output format of `deps`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DepsFormat {
    /// Two lists of references.
    #[default]
    Pretty,
    /// `{"base": [...], "virtual": [...]}`.
    Json,
}

/// Flags of `portcullis deps`.
#[derive(Debug, Clone, clap::Args)]
pub struct DepsArgs {
    /// Policy and data files or directories (repeatable).
    #[arg(short = 'd', long = "data")]
    pub data: Vec<PathBuf>,
    /// OPA bundles: directories or `.tar.gz` archives (repeatable).
    #[arg(short = 'b', long = "bundle")]
    pub bundles: Vec<PathBuf>,
    /// Output format.
    #[arg(short = 'f', long = "format", value_enum, default_value = "pretty")]
    pub format: DepsFormat,
    /// Parse policies as Rego v0.
    #[arg(long = "v0-compatible")]
    pub v0_compatible: bool,
    /// The query, e.g. `data.envoy.authz.allow`.
    pub query: String,
}

/// The base and virtual documents a query depends on.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Dependencies {
    pub base: Vec<String>,
    #[serde(rename = "virtual")]
    pub virtual_: Vec<String>,
}

/// Loads the policies, and analyses the query.
pub fn deps(args: &DepsArgs) -> Result<Dependencies, String> {
    let limits = crate::bundle::Limits::default();
    let mut sources = Sources::read_with(
        &args.data,
        &args.bundles,
        &[],
        &BundleOptions {
            verification: None,
            skip_verify: true,
            limits: &limits,
        },
    )
    .map_err(|e| e.to_string())?;
    // The policies must load as the server loads them.
    Snapshot::build(
        &sources,
        &PolicyOptions {
            rego_v0: args.v0_compatible,
            ..Default::default()
        },
        1,
    )
    .map_err(|e| e.to_string())?;
    if args.query.contains('\n') {
        return Err("the query must be one line".into());
    }
    sources.add_module(
        "(query)".into(),
        format!("package {QUERY_PACKAGE}\n\nq if {{\n{}\n}}\n", args.query),
    );
    let mut engine = regorus::Engine::new();
    for (name, text) in &sources.modules {
        engine.set_rego_v0(args.v0_compatible && name != "(query)");
        engine
            .add_policy(name.clone(), text.clone())
            .map_err(|e| e.to_string())?;
    }
    for b in &sources.bundles {
        for m in &b.modules {
            engine.set_rego_v0(m.rego_v0.unwrap_or(args.v0_compatible));
            engine
                .add_policy(m.name.clone(), m.text.clone())
                .map_err(|e| e.to_string())?;
        }
    }
    let (rules, _) = recursion::references(engine.get_modules())?;
    let start = format!("data.{QUERY_PACKAGE}.q");
    let all: Vec<String> = rules.keys().filter(|k| **k != start).cloned().collect();
    let mut base = BTreeSet::new();
    let mut virtual_ = BTreeSet::new();
    let mut queue: VecDeque<String> = rules
        .get(&start)
        .map(|(_, refs)| refs.iter().cloned().collect())
        .unwrap_or_default();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    while let Some(reference) = queue.pop_front() {
        if !seen.insert(reference.clone()) {
            continue;
        }
        let reached: Vec<String> = recursion::reached_rules(&all, &reference).collect();
        if reached.is_empty() {
            base.insert(reference);
            continue;
        }
        for rule in reached {
            if virtual_.insert(rule.clone())
                && let Some((_, refs)) = rules.get(&rule)
            {
                queue.extend(refs.iter().cloned());
            }
        }
    }
    Ok(Dependencies {
        base: base.into_iter().collect(),
        virtual_: virtual_.into_iter().collect(),
    })
}

/// Runs `deps`; returns the exit code.
pub fn main(args: &DepsArgs) -> i32 {
    match deps(args) {
        Ok(d) => {
            match args.format {
                DepsFormat::Json => {
                    println!("{}", serde_json::to_string_pretty(&d).unwrap_or_default())
                }
                DepsFormat::Pretty => {
                    println!("base document references:");
                    for r in &d.base {
                        println!("  {r}");
                    }
                    println!("virtual document references:");
                    for r in &d.virtual_ {
                        println!("  {r}");
                    }
                }
            }
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}
