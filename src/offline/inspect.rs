//! `portcullis inspect [-f json] BUNDLE`, like `opa inspect`: a bundle's manifest, its
//! namespaces (package → files), its rules and their `# METADATA` annotations.
//!
//! regorus does not keep comments, so annotations are read here from the module text: a
//! `# METADATA` comment line, then the YAML in the comment lines below it, attaches to the rule
//! (or `package`) on the next line, with OPA's default scope (`rule`, or `package`). A block
//! that is not a YAML mapping is an error, as in OPA. Signatures are not verified (inspect
//! reads, it does not load), and the bundle's policies must parse.

use std::collections::BTreeMap;
use std::path::PathBuf;

use regorus::unstable::{Rule, RuleHead};
use serde::Serialize;

use super::diagnostic::Location;
use crate::bundle::{Bundle, archive, signing};

/// Output format of `inspect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum InspectFormat {
    /// Sections of text.
    #[default]
    Pretty,
    /// One JSON document.
    Json,
}

/// Flags of `portcullis inspect`.
#[derive(Debug, Clone, clap::Args)]
pub struct InspectArgs {
    /// Output format.
    #[arg(short = 'f', long = "format", value_enum, default_value = "pretty")]
    pub format: InspectFormat,
    /// Accepted for OPA's `-a`: annotations are always listed.
    #[arg(short = 'a', long = "annotations")]
    pub annotations: bool,
    /// Parse modules without a `rego_version` as Rego v0.
    #[arg(long = "v0-compatible")]
    pub v0_compatible: bool,
    /// A bundle directory or `.tar.gz` archive.
    pub path: PathBuf,
}

/// A rule, by its path and where it is defined.
#[derive(Debug, Clone, Serialize)]
pub struct RuleInfo {
    pub path: String,
    pub location: Location,
}

/// The annotations of one rule or package.
#[derive(Debug, Clone, Serialize)]
pub struct AnnotationInfo {
    pub path: String,
    pub location: Location,
    pub annotations: serde_json::Map<String, serde_json::Value>,
}

/// What `inspect` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    pub manifest: serde_json::Value,
    pub namespaces: BTreeMap<String, Vec<String>>,
    pub rules: Vec<RuleInfo>,
    pub annotations: Vec<AnnotationInfo>,
}

/// `# METADATA` blocks of `text`: the line each attaches to (1-based) and its YAML.
fn metadata_blocks(text: &str) -> Vec<(u32, String, u32)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines.get(i).is_some_and(|l| l.trim() == "# METADATA") {
            let start = i + 1;
            let mut yaml = String::new();
            i += 1;
            while let Some(l) = lines.get(i) {
                let t = l.trim_start();
                let Some(rest) = t.strip_prefix('#') else {
                    break;
                };
                yaml.push_str(rest.strip_prefix(' ').unwrap_or(rest));
                yaml.push('\n');
                i += 1;
            }
            while lines.get(i).is_some_and(|l| l.trim().is_empty()) {
                i += 1;
            }
            let target = u32::try_from(i + 1).unwrap_or(u32::MAX);
            out.push((target, yaml, u32::try_from(start).unwrap_or(u32::MAX)));
        } else {
            i += 1;
        }
    }
    out
}

/// Reads and inspects the bundle at `args.path`.
pub fn inspect(args: &InspectArgs) -> Result<Inspection, String> {
    let limits = archive::Limits::default();
    let mut files = archive::read_path(&args.path, &limits).map_err(|e| e.to_string())?;
    files.retain(|f| f.path != signing::SIGNATURES_FILE);
    let name = args.path.display().to_string();
    let bundle = Bundle::from_files(&name, files, None).map_err(|e| e.to_string())?;
    let mut manifest = serde_json::to_value(&bundle.manifest).map_err(|e| e.to_string())?;
    if let Some(m) = manifest.as_object_mut() {
        m.insert("roots".into(), serde_json::json!(bundle.roots()));
    }
    let mut namespaces: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut rules = Vec::new();
    let mut annotations = Vec::new();
    for module in &bundle.modules {
        let mut engine = regorus::Engine::new();
        engine.set_rego_v0(module.rego_v0.unwrap_or(args.v0_compatible));
        engine
            .add_policy(module.path.clone(), module.text.clone())
            .map_err(|e| e.to_string())?;
        let Some(parsed) = engine.get_modules().first().cloned() else {
            continue;
        };
        let package = regorus::utils::get_path_string(&parsed.package.refr, Some("data"))
            .map_err(|e| e.to_string())?;
        namespaces
            .entry(package.clone())
            .or_default()
            .push(module.path.clone());
        let mut rule_lines: BTreeMap<u32, String> = BTreeMap::new();
        for rule in &parsed.policy {
            let refr = match rule.as_ref() {
                Rule::Spec { head, .. } => match head {
                    RuleHead::Compr { refr, .. }
                    | RuleHead::Set { refr, .. }
                    | RuleHead::Func { refr, .. } => refr,
                },
                Rule::Default { refr, .. } => refr,
            };
            let Ok(rule_name) = regorus::utils::get_path_string(refr, None) else {
                continue;
            };
            let span = rule.span();
            let path = format!("{package}.{rule_name}");
            rule_lines.entry(span.line).or_insert_with(|| path.clone());
            if !rules.iter().any(|r: &RuleInfo| r.path == path) {
                rules.push(RuleInfo {
                    path,
                    location: Location {
                        file: module.path.clone(),
                        row: span.line,
                        col: span.col,
                    },
                });
            }
        }
        for (line, yaml, start) in metadata_blocks(&module.text) {
            let (path, scope) = if line == parsed.package.span.line {
                (package.clone(), "package")
            } else if let Some(p) = rule_lines.get(&line) {
                (p.clone(), "rule")
            } else {
                return Err(format!(
                    "{}:{start}: rego_parse_error: # METADATA block is not followed by a rule or package",
                    module.path
                ));
            };
            let value: serde_json::Value = yaml_serde::from_str(&yaml).map_err(|e| {
                format!("{}:{start}: rego_parse_error: # METADATA: {e}", module.path)
            })?;
            let serde_json::Value::Object(mut fields) = value else {
                return Err(format!(
                    "{}:{start}: rego_parse_error: # METADATA must be a YAML mapping",
                    module.path
                ));
            };
            fields
                .entry("scope")
                .or_insert_with(|| serde_json::Value::from(scope));
            annotations.push(AnnotationInfo {
                path,
                location: Location {
                    file: module.path.clone(),
                    row: line,
                    col: 1,
                },
                annotations: fields,
            });
        }
    }
    Ok(Inspection {
        manifest,
        namespaces,
        rules,
        annotations,
    })
}

fn pretty(i: &Inspection) -> String {
    let mut out = String::from("MANIFEST:\n");
    let m = &i.manifest;
    out.push_str(&format!(
        "  revision: {}\n  roots: {}\n",
        m["revision"].as_str().unwrap_or_default(),
        m["roots"]
    ));
    if let Some(meta) = m.get("metadata") {
        out.push_str(&format!("  metadata: {meta}\n"));
    }
    out.push_str("\nNAMESPACES:\n");
    for (ns, files) in &i.namespaces {
        out.push_str(&format!("  {ns}: {}\n", files.join(", ")));
    }
    out.push_str("\nRULES:\n");
    for r in &i.rules {
        out.push_str(&format!(
            "  {}  ({}:{})\n",
            r.path, r.location.file, r.location.row
        ));
    }
    out.push_str("\nANNOTATIONS:\n");
    for a in &i.annotations {
        out.push_str(&format!(
            "  {}  ({}:{})\n",
            a.path, a.location.file, a.location.row
        ));
        for (k, v) in &a.annotations {
            let v = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            out.push_str(&format!("    {k}: {v}\n"));
        }
    }
    out
}

/// Runs `inspect`; returns the exit code.
pub fn main(args: &InspectArgs) -> i32 {
    match inspect(args) {
        Ok(i) => {
            match args.format {
                InspectFormat::Pretty => print!("{}", pretty(&i)),
                InspectFormat::Json => {
                    println!("{}", serde_json::to_string_pretty(&i).unwrap_or_default())
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
