//! `portcullis capabilities [--current]`, like `opa capabilities --current`: the builtins this
//! build evaluates, in OPA's capabilities JSON.
//!
//! The builtins are regorus' and Portcullis' extensions (`io.jwt.*`, `crypto.sha256`, ...).
//! regorus records each builtin's arity but not its argument or result types, so every `decl`
//! lists `{"type": "any"}` per argument and an `any` result. Operators (`eq`, `plus`, ...) are
//! part of the language in regorus, not builtins, and are not listed. `features` are OPA's
//! feature names regorus implements; `wasm_abi_versions` is empty (no Wasm).

use std::collections::BTreeMap;

/// Flags of `portcullis capabilities`.
#[derive(Debug, Clone, clap::Args)]
pub struct CapabilitiesArgs {
    /// The capabilities of this build (the only ones Portcullis knows; accepted for OPA's flag).
    #[arg(long = "current")]
    pub current: bool,
}

/// Every builtin name and arity this build registers.
pub fn builtins() -> BTreeMap<String, usize> {
    // `__builtin_*` names are regorus' internal helpers, not callable builtins.
    let mut all: BTreeMap<String, usize> = regorus::unstable::BUILTINS
        .iter()
        .filter(|(name, _)| !name.starts_with("__"))
        .map(|(name, (_, n))| (name.to_string(), usize::from(*n)))
        .collect();
    for b in crate::policy::builtins::all() {
        all.insert(b.name.to_string(), usize::from(b.nargs));
    }
    all
}

#[derive(serde::Serialize)]
struct Type {
    r#type: &'static str,
}

#[derive(serde::Serialize)]
struct Decl {
    r#type: &'static str,
    args: Vec<Type>,
    result: Type,
}

#[derive(serde::Serialize)]
struct Builtin {
    name: String,
    decl: Decl,
}

/// OPA's capabilities document, in OPA's key order.
#[derive(serde::Serialize)]
pub struct Capabilities {
    builtins: Vec<Builtin>,
    future_keywords: Vec<&'static str>,
    wasm_abi_versions: Vec<()>,
    features: Vec<&'static str>,
}

/// OPA's capabilities document for this build.
pub fn document() -> Capabilities {
    let builtins = builtins()
        .into_iter()
        .map(|(name, n)| Builtin {
            name,
            decl: Decl {
                r#type: "function",
                args: (0..n).map(|_| Type { r#type: "any" }).collect(),
                result: Type { r#type: "any" },
            },
        })
        .collect();
    Capabilities {
        builtins,
        future_keywords: vec!["contains", "every", "if", "in"],
        wasm_abi_versions: Vec::new(),
        features: vec!["rego_v1", "rule_head_ref_string_prefixes", "rule_head_refs"],
    }
}

/// Prints the capabilities; returns the exit code.
pub fn main(_args: &CapabilitiesArgs) -> i32 {
    match serde_json::to_string_pretty(&document()) {
        Ok(text) => {
            println!("{text}");
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}
